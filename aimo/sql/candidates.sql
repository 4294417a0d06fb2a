-- candidates.sql: one row per candidate trace, with its vote weight under every strategy.
--
-- Reads the view `traces` that aimo/vote.py creates from the Parquet shards:
--   traces(trace_id, problem_id, source, answer_int, mean_logprob, parent_id, finish_reason,
--          mean_entropy, tail_entropy, min_conf, tail_conf, [sample, completion_tokens], clean,
--          verified, can_vote, counted)
-- where vote.py computes the two flags from the execution shards:
--   clean     some execution of the trace has exec_status = 'ok' (every code block ran cleanly)
--   verified  some execution of the trace printed the boxed answer (executions.agrees)
-- and `counted`, whether the strategies count the row: false, when the critiques replace their
-- parents' votes (config critique.replace), for a trace that a critique with an answer in
-- [0, 99999] reviews (the critique counts instead), and for a trace the scheduler cancelled
-- (finish_reason early_stop, deadline, not_started) unless config vote.count_cancelled, and for
-- a pruned or never started one always; else true. `can_vote` is the same without the critiques' replacement:
-- the evaluation's k-subsets (subset_pool.sql) draw from the generate rows that can vote.
-- A trace counts once however many execution rows it has (vote.py uses IN, not a join), so a
-- duplicated execution shard cannot double its vote; a trace with no execution row is neither
-- clean nor verified. (A flag that no requested strategy reads is set to false without a join:
-- majority and logprob need neither, weighted needs clean only.)
-- Parameters (DuckDB prepared parameters):
--   $invalid, $clean_code, $other  the weighted strategy's weights
--   $critique_weight               the weight of a critique row relative to generate/reflexion
--   $cancelled_weight              the weight of a cancelled row (counted only with
--                                  vote.count_cancelled) relative to a finished one
--   $entropy_floor                 the smallest entropy an entropy weight divides by
--   $answer_min, $answer_max       the answer range (aimo/answers.py)
-- Adds to every column of traces:
--   valid          answer_int is an integer in [$answer_min, $answer_max] (false when NULL)
--   source_weight  1 for generate and reflexion, $critique_weight for critique; any other
--                  source stops the query with an error (vote.py names the file); times
--                  $cancelled_weight for a cancelled row (early_stop, deadline)
--   w_majority     source_weight when valid, else 0
--   w_weighted     0 when answer_int is NULL; ($clean_code if clean else $other) * source_weight
--                  when valid; $invalid * source_weight for an integer outside [0, 99999]
--   w_logprob      exp(min(mean_logprob, 0)) * source_weight when valid and mean_logprob is
--                  finite; else 0 (a NULL, NaN or infinite mean_logprob gives no confidence)
--   w_entropy      source_weight / max(mean_entropy, $entropy_floor) when valid, else 0 (the
--                  AIMO3 winners' weight: a trace sure of its tokens counts more)
--   w_tail_entropy the same with tail_entropy (the tokens before the final answer)
--   w_conf         source_weight * exp(-tail_entropy) when valid, else 0: share_confidence's
--                  confidence, 1 for a certain trace, towards 0 for an unsure one
--   c_min, c_tail  the token confidence (DeepConf) of the lowest window and of the tail
--                  (min_conf, tail_conf); known_min, known_tail: whether the trace had one
--   w_min_conf, w_tail_conf  source_weight * c_min (c_tail) when valid, else 0
-- A trace whose entropy is unknown (NULL: no log-probabilities; NaN, infinite or negative) takes
-- the neutral value: the median of the known ones over all traces of the vote (1 nat when no
-- trace has one, so every weight is then equal), never the best or the worst; an unknown
-- confidence likewise (1 when none is known).
SELECT
    c.*,
    CASE WHEN c.valid THEN c.source_weight ELSE 0.0 END AS w_majority,
    CASE
        WHEN c.answer_int IS NULL THEN 0.0
        WHEN c.valid THEN c.source_weight * (
            CASE WHEN c.clean THEN CAST($clean_code AS DOUBLE) ELSE CAST($other AS DOUBLE) END)
        ELSE CAST($invalid AS DOUBLE) * c.source_weight
    END AS w_weighted,
    CASE
        WHEN c.valid AND isfinite(c.mean_logprob)
            THEN exp(least(c.mean_logprob, 0.0)) * c.source_weight
        ELSE 0.0
    END AS w_logprob,
    CASE WHEN c.valid
        THEN c.source_weight / greatest(c.e_mean, CAST($entropy_floor AS DOUBLE)) ELSE 0.0
    END AS w_entropy,
    CASE WHEN c.valid
        THEN c.source_weight / greatest(c.e_tail, CAST($entropy_floor AS DOUBLE)) ELSE 0.0
    END AS w_tail_entropy,
    CASE WHEN c.valid THEN c.source_weight * exp(-c.e_tail) ELSE 0.0 END AS w_conf,
    CASE WHEN c.valid THEN c.source_weight * c.c_min ELSE 0.0 END AS w_min_conf,
    CASE WHEN c.valid THEN c.source_weight * c.c_tail ELSE 0.0 END AS w_tail_conf
FROM (
    SELECT
        t.*,
        coalesce(CASE WHEN isfinite(t.mean_entropy) AND t.mean_entropy >= 0
                      THEN t.mean_entropy END, n.mean_entropy, 1.0) AS e_mean,
        coalesce(CASE WHEN isfinite(t.tail_entropy) AND t.tail_entropy >= 0
                      THEN t.tail_entropy END, n.tail_entropy, 1.0) AS e_tail,
        coalesce(isfinite(t.min_conf), false) AS known_min,
        coalesce(isfinite(t.tail_conf), false) AS known_tail,
        coalesce(CASE WHEN isfinite(t.min_conf) THEN t.min_conf END, n.min_conf, 1.0) AS c_min,
        coalesce(CASE WHEN isfinite(t.tail_conf) THEN t.tail_conf END, n.tail_conf, 1.0) AS c_tail,
        coalesce(t.answer_int BETWEEN $answer_min AND $answer_max, false) AS valid,
        CASE t.source
            WHEN 'generate' THEN 1.0
            WHEN 'reflexion' THEN 1.0
            WHEN 'critique' THEN CAST($critique_weight AS DOUBLE)
            ELSE error('aimo: unknown source ' || coalesce(t.source, 'NULL'))
        END * CASE WHEN t.finish_reason IN ('early_stop', 'deadline')
                   THEN CAST($cancelled_weight AS DOUBLE) ELSE 1.0 END AS source_weight
    FROM traces AS t
    CROSS JOIN (
        SELECT
            median(mean_entropy) FILTER (WHERE isfinite(mean_entropy) AND mean_entropy >= 0)
                AS mean_entropy,
            median(tail_entropy) FILTER (WHERE isfinite(tail_entropy) AND tail_entropy >= 0)
                AS tail_entropy,
            median(min_conf) FILTER (WHERE isfinite(min_conf)) AS min_conf,
            median(tail_conf) FILTER (WHERE isfinite(tail_conf)) AS tail_conf
        FROM traces
    ) AS n
) AS c
