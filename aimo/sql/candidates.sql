-- candidates.sql: one row per candidate trace, with its vote weight under every strategy.
--
-- Reads the view `traces` that aimo/vote.py creates from the Parquet shards:
--   traces(trace_id, problem_id, source, answer_int, mean_logprob, parent_id, finish_reason,
--          [sample, completion_tokens], clean, verified, counted)
-- where vote.py computes the two flags from the execution shards:
--   clean     some execution of the trace has exec_status = 'ok' (every code block ran cleanly)
--   verified  some execution of the trace printed the boxed answer (executions.agrees)
-- and `counted`, whether the strategies count the row: false, when the critiques replace their
-- parents' votes (config critique.replace), for a trace that a critique with an answer in
-- [0, 99999] reviews (the critique counts instead), and for a trace the scheduler cancelled
-- (finish_reason early_stop or deadline) unless config vote.count_cancelled; else true.
-- The evaluation's sample curves read every generate row regardless.
-- A trace counts once however many execution rows it has (vote.py uses IN, not a join), so a
-- duplicated execution shard cannot double its vote; a trace with no execution row is neither
-- clean nor verified. (A flag that no requested strategy reads is set to false without a join:
-- majority and logprob need neither, weighted needs clean only.)
-- Parameters (DuckDB prepared parameters):
--   $invalid, $clean_code, $other  the weighted strategy's weights
--   $critique_weight               the weight of a critique row relative to generate/reflexion
-- Adds to every column of traces:
--   valid          answer_int is an integer in [0, 99999]  (false when answer_int is NULL)
--   source_weight  1 for generate and reflexion, $critique_weight for critique; any other
--                  source stops the query with an error (vote.py names the file)
--   w_majority     source_weight when valid, else 0
--   w_weighted     0 when answer_int is NULL; ($clean_code if clean else $other) * source_weight
--                  when valid; $invalid * source_weight for an integer outside [0, 99999]
--   w_logprob      exp(min(mean_logprob, 0)) * source_weight when valid and mean_logprob is
--                  finite; else 0 (a NULL, NaN or infinite mean_logprob gives no confidence)
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
    END AS w_logprob
FROM (
    SELECT
        t.*,
        coalesce(t.answer_int BETWEEN 0 AND 99999, false) AS valid,
        CASE t.source
            WHEN 'generate' THEN 1.0
            WHEN 'reflexion' THEN 1.0
            WHEN 'critique' THEN CAST($critique_weight AS DOUBLE)
            ELSE error('aimo: unknown source ' || coalesce(t.source, 'NULL'))
        END AS source_weight
    FROM traces AS t
) AS c
