-- eval_rows.sql: the generate samples of the problems with a known answer, for the evaluation's
-- k-subset curves (aimo/evaluate.py numbers their answers and weight classes).
-- Reads: candidates (candidates.sql, materialised) and problem_index(problem_id, pidx): the
-- known-answer problems numbered 0.. .
-- One row per generate sample, ordered by pidx and sample (a fixed order, so that a seed gives
-- the same subsets every run; the generate samples of a problem have distinct sample numbers):
--   pidx                               the problem's number
--   answer_int                         0 where NULL (such a sample has no weight anywhere)
--   w_majority, w_weighted, w_logprob, w_entropy, w_tail_entropy, w_conf
--                                      its weights (candidates.sql)
--   verified                           its code printed the boxed answer
SELECT
    pi.pidx,
    coalesce(c.answer_int, 0) AS answer_int,
    c.w_majority,
    c.w_weighted,
    c.w_logprob,
    c.w_entropy,
    c.w_tail_entropy,
    c.w_conf,
    c.verified
FROM candidates AS c
JOIN problem_index AS pi ON pi.problem_id = c.problem_id
WHERE c.source = 'generate'
ORDER BY pi.pidx, c.sample
