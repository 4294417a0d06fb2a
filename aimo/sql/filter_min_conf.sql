-- filter_min_conf.sql: DeepConf's offline filter, then a confidence-weighted vote. Per problem, the
-- counted valid candidates are ranked by their token confidence min_conf (c_min, candidates.sql);
-- the top $filter_keep share of those with a known confidence is kept (at least one), and every
-- one without a confidence (rows made elsewhere) is kept too, at the neutral weight. Per
-- problem and answer: score = the sum of w_min_conf over the kept candidates; votes = their
-- count.
-- Reads: candidates (candidates.sql). One row per (problem_id, answer); rank.sql picks the
-- winner.
SELECT
    problem_id,
    answer_int AS answer,
    sum(w_min_conf) AS score,
    count(*) AS votes
FROM (
    SELECT
        problem_id,
        answer_int,
        w_min_conf,
        known_min,
        row_number() OVER (
            PARTITION BY problem_id, known_min ORDER BY c_min DESC, answer_int
        ) AS place,
        count(*) OVER (PARTITION BY problem_id, known_min) AS n
    FROM candidates
    WHERE counted AND valid
)
WHERE NOT known_min OR place <= greatest(1, round(CAST($filter_keep AS DOUBLE) * n))
GROUP BY problem_id, answer_int
