-- subset_hits.sql: per k-point of the evaluation's curves, how many (subset, problem) groups a
-- strategy's vote gets right (aimo/subsets.py divides by the subsets times the problems).
-- Reads: votes (rank.sql's rows, one per group) and problems(problem_id, gi, answer): the
-- groups, each a k-subset of one problem's pool rows, gi the number of its k-point and answer
-- the problem's known answer.
SELECT g.gi, count(*) AS hits
FROM votes AS v
JOIN problems AS g ON g.problem_id = v.problem_id
WHERE v.answer = g.answer
GROUP BY g.gi
