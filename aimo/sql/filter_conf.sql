-- filter_conf.sql: DeepConf's offline filter, then a confidence-weighted vote; the template of
-- filter_min_conf ({conf} = min: the lowest window's confidence min_conf) and filter_tail_conf
-- ({conf} = tail: the tail's tail_conf), aimo/strategies.py fills it in. Per problem, the
-- counted valid candidates are ranked by their token confidence c_{conf} (candidates.sql); the
-- top $filter_keep share of those with a known confidence is kept (at least one), and every one
-- without a confidence (rows made elsewhere) is kept too, at the neutral weight. Per problem and
-- answer: score = the sum of w_{conf}_conf over the kept candidates; votes = their count.
-- Reads: candidates (candidates.sql). One row per (problem_id, answer); rank.sql picks the
-- winner.
SELECT
    problem_id,
    answer_int AS answer,
    sum(w_{conf}_conf) AS score,
    count(*) AS votes
FROM (
    SELECT
        problem_id,
        answer_int,
        w_{conf}_conf,
        known_{conf},
        row_number() OVER (
            PARTITION BY problem_id, known_{conf} ORDER BY c_{conf} DESC, answer_int
        ) AS place,
        count(*) OVER (PARTITION BY problem_id, known_{conf}) AS n
    FROM candidates
    WHERE counted AND valid
)
WHERE NOT known_{conf} OR place <= greatest(1, round(CAST($filter_keep AS DOUBLE) * n))
GROUP BY problem_id, answer_int
