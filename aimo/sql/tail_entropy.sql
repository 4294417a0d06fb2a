-- tail_entropy.sql: entropy-weighted vote. Per problem and answer: score = the sum over the valid
-- candidates giving that answer of their weight w_tail_entropy, i.e. the source weight times
-- 1 / the mean entropy of its last tokens before the final answer (tail_entropy); a trace whose entropy is unknown takes the median of the known ones
-- (candidates.sql). votes = the number of candidates with a positive weight.
-- Reads: candidates (candidates.sql), the rows it marks counted. One row per (problem_id, answer);
-- rank.sql picks the winner.
SELECT
    problem_id,
    answer_int AS answer,
    sum(w_tail_entropy) AS score,
    count(*) FILTER (WHERE w_tail_entropy > 0) AS votes
FROM candidates
WHERE counted
GROUP BY problem_id, answer_int
