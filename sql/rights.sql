-- The registry of personal data, who may act on a subject's rights, the
-- rights log, and finding a requester.

\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS gdprcrm;
RESET client_min_messages;

SELECT setval('gdprcrm.people_id_seq', greatest(400000, (SELECT last_value FROM gdprcrm.people_id_seq)))
    IS NOT NULL AS fresh_ids;

CREATE ROLE regress_rg_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_rg_other_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_rg_app IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('Rights Co', ARRAY['regress_rg_admin', 'regress_rg_app']::name[]) AS proj \gset
SELECT gdprcrm.create_project('Other Co', ARRAY['regress_rg_other_admin']::name[]) AS other \gset
SELECT gdprcrm.identify(:proj, 'rg-1', 'Ada.Lovelace@Example.org') AS ada \gset
SELECT gdprcrm.identify(:other, 'rg-1', 'ada.lovelace@example.org') AS ada_elsewhere \gset

-- The CRM tables are registered at install, with the contexts of their
-- encrypted columns.
SELECT relation, subject_column, category, builtin, on_purge
FROM gdprcrm.registered_tables ORDER BY relation::text;
SELECT * FROM gdprcrm.encrypted_columns('gdprcrm.people');
SELECT * FROM gdprcrm.encrypted_columns('gdprcrm.messages');

-- An application's own table.
CREATE TABLE regress_orders (
    id bigserial PRIMARY KEY,
    customer bigint NOT NULL,
    customer_int integer,
    note gdprcrm.encrypted_text,
    receipt gdprcrm.encrypted_bytea,
    shipping_address text
);
CREATE VIEW regress_orders_view AS SELECT * FROM regress_orders;

-- Not protected yet: registered, with a warning.
SELECT gdprcrm.register_table('regress_orders', 'customer', 'orders', 'Orders and their notes',
                              '{"note": "shop.orders.note"}');
SELECT * FROM gdprcrm.encrypted_columns('regress_orders');
SELECT gdprcrm.protect('regress_orders', 'customer');
-- Registering again updates the registration, without a warning now.
SELECT gdprcrm.register_table('regress_orders', 'customer', 'orders', 'Orders',
                              '{"note": "shop.orders.note"}', 'anonymise', ARRAY['shipping_address']::name[]);
SELECT relation, subject_column, category, description, contexts, on_purge, anonymise_columns, builtin, registered_by
FROM gdprcrm.registered_tables WHERE relation = 'regress_orders'::regclass;

-- Refused clearly.
SELECT gdprcrm.register_table('regress_orders_view', 'customer');
SELECT gdprcrm.register_table('regress_orders', 'no_such_column');
SELECT gdprcrm.register_table('regress_orders', 'customer_int');
SELECT gdprcrm.register_table('regress_orders', 'customer', contexts => '{"shipping_address": "x"}');
SELECT gdprcrm.register_table('regress_orders', 'customer', contexts => '{"note": 1}');
SELECT gdprcrm.register_table('regress_orders', 'customer', contexts => '[]');
SELECT gdprcrm.register_table('regress_orders', 'customer', on_purge => 'shred');
SELECT gdprcrm.register_table('regress_orders', 'customer', on_purge => 'anonymise');
SELECT gdprcrm.register_table('regress_orders', 'customer', on_purge => 'anonymise',
                              anonymise_columns => ARRAY['customer']::name[]);

-- Only superusers, and gdprcrm_admin members who own the table.
SET ROLE regress_rg_app;
SELECT gdprcrm.register_table('regress_orders', 'customer');
SET ROLE regress_rg_admin;
SELECT gdprcrm.register_table('regress_orders', 'customer');
SELECT gdprcrm.unregister_table('regress_orders');
RESET ROLE;

-- The CRM tables stay registered; an application table can leave.
SELECT gdprcrm.unregister_table('gdprcrm.people');
SELECT gdprcrm.unregister_table('regress_orders') AS unregistered;
SELECT gdprcrm.unregister_table('regress_orders') AS unregistered_again;
-- A dropped table leaves the registry, whoever drops it.
SELECT gdprcrm.register_table('regress_orders', 'customer');
ALTER TABLE regress_orders OWNER TO regress_rg_app;
ALTER VIEW regress_orders_view OWNER TO regress_rg_app;
SET ROLE regress_rg_app;
DROP TABLE regress_orders CASCADE;
RESET ROLE;
SELECT count(*) AS orders_registered FROM gdprcrm.registered_tables WHERE NOT builtin;

-- Who may act on a subject's rights: superusers, and gdprcrm_admin members
-- of the subject's project team; the same error for every other case.
SELECT gdprcrm.require_subject_admin(:ada) = :proj AS superuser_gets_project;
SELECT gdprcrm.require_subject_admin(:ada + 100000) IS NULL AS superuser_unknown_subject;
SET ROLE regress_rg_admin;
SELECT gdprcrm.require_subject_admin(:ada) = :proj AS admin_of_team;
SELECT gdprcrm.require_subject_admin(:ada_elsewhere);
SELECT gdprcrm.require_subject_admin(:ada + 100000);
SELECT gdprcrm.require_subject_admin(0);
SET ROLE regress_rg_app;
SELECT gdprcrm.require_subject_admin(:ada);
RESET ROLE;

-- Finding a requester: by email in any letter case, by external id, only
-- in the projects the caller administers.
SELECT project_id = :proj AS in_proj, subject = :ada AS is_ada, matched_by
FROM gdprcrm.find_subject(email => '  ADA.LOVELACE@example.ORG ') ORDER BY project_id;
SET ROLE regress_rg_admin;
SELECT project_id = :proj AS in_proj, subject = :ada AS is_ada, matched_by
FROM gdprcrm.find_subject(email => 'ada.lovelace@example.org', external_id => 'rg-1');
SELECT count(*) AS nobody FROM gdprcrm.find_subject(email => 'nobody@example.org');
SELECT gdprcrm.find_subject();
SET ROLE regress_rg_app;
SELECT * FROM gdprcrm.find_subject(email => 'ada.lovelace@example.org');
RESET ROLE;

-- The rights log is append-only, even for its owner, and filtered by team.
SELECT gdprcrm.log_right(:ada, :proj, 'export', 'jsonb') > 0 AS logged;
SELECT gdprcrm.log_right(:ada_elsewhere, :other, 'export', 'csv') > 0 AS logged;
UPDATE gdprcrm.rights_log SET reason = 'x';
DELETE FROM gdprcrm.rights_log;
TRUNCATE gdprcrm.rights_log;
SET ROLE regress_rg_admin;
SELECT subject = :ada AS is_ada, action, detail, recorded_by FROM gdprcrm.rights_log;
SET ROLE regress_rg_app;
SELECT count(*) FROM gdprcrm.rights_log;
RESET ROLE;

DROP OWNED BY regress_rg_admin, regress_rg_other_admin, regress_rg_app;
DROP ROLE regress_rg_admin, regress_rg_other_admin, regress_rg_app;
