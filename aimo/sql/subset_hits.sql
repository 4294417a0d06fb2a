-- subset_hits.sql: per k-point of the evaluation's curves, how many (subset, problem) groups a
-- strategy's vote gets right (aimo/subsets.py divides by the subsets times the problems).
-- Reads: votes (rank.sql's rows, one per group) and problems(problem_id, gi, answer, weight):
-- the groups, each a k-subset of one problem's pool rows, gi the number of its k-point, answer
-- the problem's known answer and weight the subsets it stands for (all of them for a k-subset
-- that is the whole pool, which one group holds; else 1).
SELECT g.gi, sum(g.weight) AS hits
FROM votes AS v
JOIN problems AS g ON g.problem_id = v.problem_id
WHERE v.answer = g.answer
GROUP BY g.gi
