-- eval_rows.sql: the generate samples of the problems with a known answer, in the compact form
-- the evaluation's k-subset curves use (aimo/evaluate.py). A script of four statements.
-- Reads: candidates (candidates.sql, materialised) and problem_index(problem_id, pidx): the
-- known-answer problems numbered 0.. .
-- Creates:
--   eval_gen      the generate candidates of those problems with their problem number
--   eval_codes    (pidx, answer_int) -> code: every answer with a positive weight under some
--                 strategy, numbered in (pidx, answer) order from 0
--   eval_classes  (w_majority, w_weighted, verified, w_logprob > 0) -> cls: the distinct weight
--                 classes, numbered from 0 (a handful: the weights are few discrete values,
--                 except w_logprob, which is fetched per row)
-- Returns one row per sample, ordered by pidx and sample (a fixed order, so that a seed gives the
-- same subsets every run; generate samples of a problem have distinct sample numbers): pidx,
-- code (-1 for a sample with no weight anywhere; it still takes a place in a subset), cls,
-- w_logprob.
CREATE OR REPLACE TEMP TABLE eval_gen AS
SELECT pi.pidx, c.sample, c.answer_int, c.w_majority, c.w_weighted, c.w_logprob, c.verified
FROM candidates AS c
JOIN problem_index AS pi ON pi.problem_id = c.problem_id
WHERE c.source = 'generate';

CREATE OR REPLACE TEMP TABLE eval_codes AS
SELECT pidx, answer_int, CAST(row_number() OVER (ORDER BY pidx, answer_int) - 1 AS BIGINT) AS code
FROM (
    SELECT DISTINCT pidx, answer_int
    FROM eval_gen
    WHERE answer_int IS NOT NULL AND (w_majority > 0 OR w_weighted > 0 OR w_logprob > 0)
);

CREATE OR REPLACE TEMP TABLE eval_classes AS
SELECT w_majority, w_weighted, verified, lp_pos,
       CAST(row_number() OVER (ORDER BY w_majority, w_weighted, verified, lp_pos) - 1 AS BIGINT)
           AS cls
FROM (SELECT DISTINCT w_majority, w_weighted, verified, w_logprob > 0 AS lp_pos FROM eval_gen);

SELECT g.pidx, coalesce(k.code, -1) AS code, cl.cls, g.w_logprob
FROM eval_gen AS g
LEFT JOIN eval_codes AS k ON k.pidx = g.pidx AND k.answer_int = g.answer_int
JOIN eval_classes AS cl
    ON cl.w_majority = g.w_majority AND cl.w_weighted = g.w_weighted
    AND cl.verified = g.verified AND cl.lp_pos = (g.w_logprob > 0)
ORDER BY g.pidx, g.sample;
