-- subset_pool.sql: the rows the evaluation's k-subsets are drawn from (aimo/subsets.py): the
-- generate rows that can vote (can_vote, candidates.sql: not cancelled unless
-- vote.count_cancelled, never pruned or not started) of the problems with a known answer. Reflexion and
-- critique rows are follow-ups of particular samples, so a random subset of them has no
-- meaning; and with no critique in a subset, none replaces its parent: every pool row counts.
-- Reads: candidates (candidates.sql, materialised) and problems(problem_id, answer).
-- One row per such candidate, every column of candidates but problem_id (counted: true), and:
--   pool_row  its number, 0.., in (problem_id, sample) order (a fixed order, so that a seed
--             draws the same subsets every run)
--   pidx      its problem's number, 0.. in problem_id order
--   truth     its problem's known answer
SELECT
    row_number() OVER (ORDER BY c.problem_id, c.sample) - 1 AS pool_row,
    dense_rank() OVER (ORDER BY c.problem_id) - 1 AS pidx,
    p.answer AS truth,
    c.* EXCLUDE (problem_id, counted),
    true AS counted
FROM candidates AS c
JOIN problems AS p ON p.problem_id = c.problem_id
WHERE c.source = 'generate' AND c.can_vote AND p.answer IS NOT NULL
ORDER BY pool_row
