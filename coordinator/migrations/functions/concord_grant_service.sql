-- The rights of the service's group role (coordinator/service_role.py SERVICE_ROLE, passed
-- as service), given by the ledger's owner each time a migration run changed the schema
-- (coordinator/migrations/__init__.py): the service reads and writes every table of the
-- schema, but may only read and append to the ledger (SELECT and INSERT on events: no
-- UPDATE, DELETE or TRUNCATE, and, not owning it, no ALTER TABLE, so no switching its
-- append-only triggers off), and only read the record of migrations. Creating the role
-- needs CREATEROLE; where the owner lacks it, a superuser creates the role once
-- (docs/operations.md, "Database roles and migrations").
CREATE OR REPLACE FUNCTION concord_grant_service(service text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regrole(service) IS NULL THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', service);
    END IF;
    IF NOT has_schema_privilege(service, 'public', 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', service);
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I',
                   service);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', service);
    EXECUTE format('REVOKE UPDATE, DELETE ON events FROM %I', service);
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON concord_migrations FROM %I', service);
END $$;
