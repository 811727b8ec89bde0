#!/usr/bin/env bash
# One login role and one schema per service, both named after the service, in
# the database $POSTGRES_DB (tweetshop): role catalog owns schema catalog, its
# search_path is catalog, and no role can reach another's schema or create in
# public. The same privileges as tweetshop_platform.db.provision_service, which
# does this for `make run`.
#
# The postgres image runs this once, on an empty data directory (a new volume):
# changing a password later means `docker compose down -v` (drops the data) or
# ALTER ROLE by hand. Each password comes from <SERVICE>_DB_PASSWORD, e.g.
# CATALOG_DB_PASSWORD; docker-compose.yml sets them (dev defaults there).
set -eo pipefail  # no -u: the image may source this file into its own entrypoint

# Every service with a database in libs/contracts/src/tweetshop_contracts/system.py, in its order
# (tests/deploy/test_compose.py checks this list against the declaration).
services=(catalog feed checkout tracking)

admin_psql() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
        --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-tweetshop}" "$@"
}

admin_psql <<'SQL'
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL

for service in "${services[@]}"; do
    password_var="${service^^}_DB_PASSWORD"
    password="${!password_var:-}"
    if [[ -z "$password" ]]; then
        echo "tweetshop init: $password_var is not set" >&2
        exit 1
    fi
    # psql variables (:"role" an identifier, :'password' a literal) do the quoting.
    admin_psql -v role="$service" -v password="$password" <<'SQL'
SELECT current_database() AS dbname \gset
CREATE ROLE :"role" WITH LOGIN PASSWORD :'password';
CREATE SCHEMA :"role" AUTHORIZATION :"role";
REVOKE ALL ON SCHEMA :"role" FROM PUBLIC;
ALTER ROLE :"role" IN DATABASE :"dbname" SET search_path = :"role";
SQL
    echo "tweetshop init: role and schema $service created"
done
