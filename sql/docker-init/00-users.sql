-- The database and users of the Docker Compose stack (MySQL 8) (docker-compose.yml mounts this directory on
-- /docker-entrypoint-initdb.d). The server image runs it once, as root, when its data volume is
-- empty; after a change here, `docker compose down -v` (which deletes the data) to apply it.
--
-- Same database, users, grants and default passwords as the local stack (scripts/stack.sh), but
-- for host '%': in Compose the clients connect over the compose network, and the host's clients
-- (Power BI, SQL tools) through the port published on 127.0.0.1.
-- The schema itself is not created here: `auction-consumer migrate` (the `migrate` service)
-- applies sql/migrations as auction_admin.

CREATE DATABASE IF NOT EXISTS auction CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

-- The site and the consumers (DATABASE_URL).
CREATE USER IF NOT EXISTS 'auction'@'%' IDENTIFIED BY 'auction';
-- UPDATE for the standings the db-writer keeps (auction_standing); nothing is ever deleted.
GRANT SELECT, INSERT, UPDATE ON auction.* TO 'auction'@'%';

-- Analysts: read-only (Power BI, any SQL client; see powerbi/README.md).
CREATE USER IF NOT EXISTS 'analyst'@'%' IDENTIFIED BY 'analyst';
GRANT SELECT ON auction.* TO 'analyst'@'%';

-- Migrations (ADMIN_DATABASE_URL).
CREATE USER IF NOT EXISTS 'auction_admin'@'%' IDENTIFIED BY 'auction_admin';
GRANT ALL PRIVILEGES ON auction.* TO 'auction_admin'@'%';
-- As in the local stack: the integration tests create and drop databases named auction_test_*.
GRANT ALL PRIVILEGES ON `auction\_test\_%`.* TO 'auction_admin'@'%';
