-- share_confidence.sql: vote share, confidence and consensus mixed (the AIMO3 2nd place's
-- "vote-dominant selection"). Per problem and answer, over the valid counted candidates giving it
-- (v = the sum of their w_majority, i.e. of their source weights):
--   share       v / the same sum over every answer of the problem
--   confidence  the mean of exp(-tail_entropy) over them (w_conf / v; candidates.sql)
--   consensus   the share of them whose code, re-run, printed that answer (verified)
--   score       $mix_share * share + $mix_confidence * confidence + $mix_consensus * consensus
-- (config vote.mix); votes = the number of them. An answer no valid candidate gives scores 0.
-- Reads: candidates (candidates.sql), the rows it marks counted. One row per (problem_id, answer);
-- rank.sql picks the winner.
SELECT
    problem_id,
    answer,
    CASE WHEN v > 0 THEN
        CAST($mix_share AS DOUBLE) * v / sum(v) OVER (PARTITION BY problem_id)
        + CAST($mix_confidence AS DOUBLE) * conf / v
        + CAST($mix_consensus AS DOUBLE) * ver / v
    ELSE 0.0 END AS score,
    votes
FROM (
    SELECT
        problem_id,
        answer_int AS answer,
        sum(w_majority) AS v,
        sum(w_conf) AS conf,
        coalesce(sum(w_majority) FILTER (WHERE verified), 0.0) AS ver,
        count(*) FILTER (WHERE w_majority > 0) AS votes
    FROM candidates
    WHERE counted
    GROUP BY problem_id, answer_int
) AS tally
