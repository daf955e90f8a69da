-- The generator behind every nonce and data key, as SQL sees it.

SELECT length(gdprcrm.random_bytes(1)) AS one,
       length(gdprcrm.random_bytes(24)) AS nonce,
       length(gdprcrm.random_bytes(1024)) AS most;

-- Out of range counts are refused; NULL gives NULL.
SELECT gdprcrm.random_bytes(0);
SELECT gdprcrm.random_bytes(1025);
SELECT gdprcrm.random_bytes(-1);
SELECT gdprcrm.random_bytes(NULL) IS NULL AS null_gives_null;

-- Many draws in one backend cross many 4 kB blocks and never repeat.
SELECT count(DISTINCT gdprcrm.random_bytes(16)) AS distinct_of_200000
FROM generate_series(1, 200000);

-- Every byte value occurs and about half of all bits are set: a smoke test
-- that output is not stuck or biased (a broken generator fails it).
WITH bytes AS (
    SELECT get_byte(b, i) AS v
    FROM (SELECT gdprcrm.random_bytes(1024) AS b FROM generate_series(1, 100)) AS draws,
         generate_series(0, 1023) AS i
)
SELECT count(DISTINCT v) AS byte_values,
       round(sum(length(replace(v::bit(8)::text, '0', '')))::numeric / (count(*) * 8), 2)
           AS share_of_set_bits
FROM bytes;

-- Parallel workers are forked processes too: they must not repeat draws.
CREATE TABLE draws AS SELECT i FROM generate_series(1, 100000) AS i;
ANALYZE draws;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF)
SELECT count(DISTINCT r) FROM (SELECT gdprcrm.random_bytes(16) AS r FROM draws) AS s;
CREATE TABLE parallel_draws AS
SELECT gdprcrm.random_bytes(16) AS r FROM draws;
SELECT count(*) AS draws, count(DISTINCT r) AS distinct_draws FROM parallel_draws;
RESET ALL;
DROP TABLE draws, parallel_draws;
