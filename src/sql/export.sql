/*
 * export: the subject access export (GDPR Art. 15), in forms fit for
 * portability (Art. 20): every row of a subject in every registered table,
 * encrypted columns decrypted, with what the subject is entitled to be
 * told about the processing, as one jsonb document, as CSV documents or as
 * one printable HTML document.
 *
 * The three entry points check the caller (require_subject_admin), record
 * the export in the rights log, then build the document in STABLE
 * functions, whose statements all read the one snapshot of the statement
 * that calls them: an export shows the subject at one moment even while
 * the subject's data changes.  They run as the extension's owner, past
 * every team and purpose filter (the data protection officer must see
 * everything), and every query finds rows by the registered subject
 * column: never another subject's row.
 */

/*
 * Text escaped for HTML content and attribute values.  Plain SQL without
 * SET, so that the planner inlines it (it runs for every value of the
 * HTML export); every name in it is schema-qualified instead.
 */
CREATE FUNCTION @extschema@.html_escape(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        value, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;')
$$;
COMMENT ON FUNCTION @extschema@.html_escape(text) IS
    'Text escaped for HTML content and attribute values (& < > " '')';

/*
 * One CSV field as RFC 4180 and COPY ... CSV write it: quoted when it
 * holds a comma, a quote, a line break or is empty (so that an empty
 * string differs from NULL, which is an empty unquoted field), quotes
 * doubled.  Inlined like html_escape; callers pass a column, never an
 * expression, since the inlined body reads its argument several times.
 */
CREATE FUNCTION @extschema@.csv_field(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN ''
                WHEN value OPERATOR(pg_catalog.=) '' OR value OPERATOR(pg_catalog.~) E'[",\r\n]'
                THEN '"' OPERATOR(pg_catalog.||) pg_catalog.replace(value, '"', '""') OPERATOR(pg_catalog.||) '"'
                ELSE value END
$$;
COMMENT ON FUNCTION @extschema@.csv_field(text) IS
    'One CSV field (RFC 4180): quoted when needed, NULL as an empty field';

/*
 * How export reads each column of a registered table, in column order: an
 * expression over the alias t in which $1 is the subject.  Encrypted
 * columns are decrypted with their context (encrypted_columns) and the
 * subject: a value in the subject's row that belongs to another subject is
 * an error, never a disclosure.  value_type is the type of the exported
 * value (text for encrypted_text, and so on).
 */
CREATE FUNCTION @extschema@.export_columns(tab regclass)
RETURNS TABLE (ordinal integer, column_name name, value_type text, encrypted boolean, expression text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.attnum::integer, a.attname,
           CASE WHEN e.context IS NULL THEN pg_catalog.format_type(a.atttypid, a.atttypmod)
                WHEN a.atttypid = '@extschema@.encrypted_jsonb'::regtype THEN 'jsonb'
                WHEN a.atttypid = '@extschema@.encrypted_bytea'::regtype THEN 'bytea'
                ELSE 'text' END,
           e.context IS NOT NULL,
           CASE WHEN e.context IS NULL THEN pg_catalog.format('t.%I', a.attname)
                ELSE pg_catalog.format('@extschema@.decrypt(t.%I, %L, $1)', a.attname, e.context) END
    FROM pg_catalog.pg_attribute a
    LEFT JOIN @extschema@.encrypted_columns(tab) e ON e.column_name = a.attname
    WHERE a.attrelid = tab AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
$$;
COMMENT ON FUNCTION @extschema@.export_columns(regclass) IS
    'How export reads each column of a table: decrypting expressions for encrypted columns';

/*
 * The columns a table's rows are exported in the order of: its primary
 * key or, for a partitioned table without one, the primary key of a
 * partition (the event partitions' person_id, occurred_at, id).  NULL for
 * neither: such a table's rows come in no particular order.
 */
CREATE FUNCTION @extschema@.export_order(tab regclass) RETURNS name[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT pg_catalog.array_agg(a.attname ORDER BY k.n)
            FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
    FROM pg_catalog.pg_index i
    WHERE i.indisprimary
      AND (i.indrelid = tab
           OR i.indrelid IN (SELECT h.inhrelid FROM pg_catalog.pg_inherits h WHERE h.inhparent = tab))
    ORDER BY i.indrelid <> tab, i.indrelid
    LIMIT 1
$$;
COMMENT ON FUNCTION @extschema@.export_order(regclass) IS
    'Columns export orders a table''s rows by: its primary key, or a partition''s';

/*
 * One registered table's rows of a subject, read by one query on the
 * subject column, which the table's own indexes serve (the event
 * partitions' primary keys lead with the person): the columns (name, type
 * of the exported value, whether it was encrypted), the rows as a JSON
 * array of objects, and how many.  JSON text, not jsonb: the document is
 * assembled as text and converted to jsonb once, since every conversion of
 * a large jsonb value costs more than the query (doc/benchmarks.md).
 * json_build_object takes at most 50 pairs, so wider rows are built as
 * jsonb slices put together.
 */
CREATE FUNCTION @extschema@.export_table(tab regclass, subject_column name, subject bigint,
                                         OUT columns json, OUT rows json, OUT row_count bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET intervalstyle = 'iso_8601' SET bytea_output = 'hex' AS $$
DECLARE
    v_object text;
    v_order text;
BEGIN
    SELECT CASE WHEN count(*) <= 50 THEN
               'pg_catalog.json_build_object(' ||
               pg_catalog.string_agg(pg_catalog.format('%L, %s', c.column_name, c.expression), ', ' ORDER BY c.ordinal)
               || ')'
           ELSE
               '(' || (SELECT pg_catalog.string_agg(s.part, ' OPERATOR(pg_catalog.||) ' ORDER BY s.slice)
                       FROM (SELECT x.n / 50 AS slice,
                                    'pg_catalog.jsonb_build_object(' ||
                                    pg_catalog.string_agg(pg_catalog.format('%L, %s', x.column_name, x.expression), ', '
                                                          ORDER BY x.n) || ')' AS part
                             FROM (SELECT e.*, pg_catalog.row_number() OVER (ORDER BY e.ordinal) - 1 AS n
                                   FROM @extschema@.export_columns(tab) e) x
                             GROUP BY x.n / 50) s)
               || ')::pg_catalog.json' END,
           pg_catalog.json_agg(pg_catalog.json_build_object('name', c.column_name, 'type', c.value_type,
                                                            'encrypted', c.encrypted) ORDER BY c.ordinal)
    INTO v_object, columns
    FROM @extschema@.export_columns(tab) c;
    SELECT pg_catalog.string_agg(pg_catalog.format('t.%I', o.col), ', ' ORDER BY o.n) INTO v_order
    FROM pg_catalog.unnest(@extschema@.export_order(tab)) WITH ORDINALITY AS o(col, n);

    EXECUTE pg_catalog.format('SELECT pg_catalog.json_agg(%s%s), count(*) FROM %s t WHERE t.%I OPERATOR(pg_catalog.=) $1',
                              v_object, CASE WHEN v_order IS NOT NULL THEN ' ORDER BY ' || v_order ELSE '' END,
                              tab, subject_column)
        INTO rows, row_count USING subject;
    rows := coalesce(rows, '[]');
END $$;
COMMENT ON FUNCTION @extschema@.export_table(regclass, name, bigint) IS
    'One registered table''s rows of a subject, decrypted, as JSON, with its columns (for the exports)';

/*
 * The same rows as one CSV document: a header line of column names, then
 * one line per row, each value in its PostgreSQL text form (as COPY
 * writes it: ISO dates, jsonb as JSON text, bytea in hex), lines ended by
 * CRLF.  The values are computed in a subquery that OFFSET 0 keeps from
 * being flattened, so that csv_field, inlined, reads each value without
 * decrypting it again.
 */
CREATE FUNCTION @extschema@.export_table_csv(tab regclass, subject_column name, subject bigint)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET bytea_output = 'hex' AS $$
DECLARE
    v_header text;
    v_values text;
    v_line text;
    v_order_values text;
    v_order text;
    v_csv text;
BEGIN
    SELECT pg_catalog.string_agg(@extschema@.csv_field(c.column_name::text), ',' ORDER BY c.ordinal),
           pg_catalog.string_agg(pg_catalog.format('(%s)::text AS c%s', c.expression, c.ordinal), ', '
                                 ORDER BY c.ordinal),
           pg_catalog.string_agg(pg_catalog.format('@extschema@.csv_field(r.c%s)', c.ordinal),
                                 ' OPERATOR(pg_catalog.||) '','' OPERATOR(pg_catalog.||) ' ORDER BY c.ordinal)
    INTO v_header, v_values, v_line
    FROM @extschema@.export_columns(tab) c;
    SELECT pg_catalog.string_agg(pg_catalog.format(', t.%I AS o%s', o.col, o.n), '' ORDER BY o.n),
           pg_catalog.string_agg(pg_catalog.format('r.o%s', o.n), ', ' ORDER BY o.n)
    INTO v_order_values, v_order
    FROM pg_catalog.unnest(@extschema@.export_order(tab)) WITH ORDINALITY AS o(col, n);

    EXECUTE pg_catalog.format(
        'SELECT pg_catalog.string_agg(%s OPERATOR(pg_catalog.||) E''\r\n'', ''''%s) '
        'FROM (SELECT %s%s FROM %s t WHERE t.%I OPERATOR(pg_catalog.=) $1 OFFSET 0) r',
        v_line, CASE WHEN v_order IS NOT NULL THEN ' ORDER BY ' || v_order ELSE '' END,
        v_values, coalesce(v_order_values, ''), tab, subject_column)
        INTO v_csv USING subject;
    RETURN v_header || E'\r\n' || coalesce(v_csv, '');
END $$;
COMMENT ON FUNCTION @extschema@.export_table_csv(regclass, name, bigint) IS
    'One registered table''s rows of a subject, decrypted, as a CSV document with a header line (for the exports)';

/* A duration for people: "30 days", "1 year 6 months". */
CREATE FUNCTION @extschema@.export_duration(value interval) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.string_agg(u.n::text || ' ' || u.unit || CASE WHEN u.n = 1 THEN '' ELSE 's' END, ' '
                                 ORDER BY u.ord)
    FROM (VALUES (1, pg_catalog.date_part('year', value), 'year'),
                 (2, pg_catalog.date_part('month', value), 'month'),
                 (3, pg_catalog.date_part('day', value), 'day'),
                 (4, pg_catalog.date_part('hour', value), 'hour'),
                 (5, pg_catalog.date_part('minute', value), 'minute')) AS u(ord, n, unit)
    WHERE u.n <> 0
$$;
COMMENT ON FUNCTION @extschema@.export_duration(interval) IS
    'A retention period in words, for the HTML export';

/*
 * The whole export of a subject as one JSON document (doc/export.md
 * describes it), which sar_export converts to jsonb once.  project is the
 * subject's project, as require_subject_admin returned it.  What the
 * subject is told about the purposes comes from explain_access, the same
 * rules as the row filter.
 */
CREATE FUNCTION @extschema@.export_document(subject bigint, project bigint)
RETURNS json
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET intervalstyle = 'iso_8601' SET bytea_output = 'hex' AS $$
DECLARE
    v_known boolean;
    v_state jsonb;
    v_since timestamptz;
    v_tables json;
    v_purposes jsonb;
    v_consents jsonb;
    v_restrictions jsonb;
    v_sources jsonb;
    v_recipients jsonb;
    v_categories jsonb;
BEGIN
    SELECT true, p.created_at INTO v_known, v_since FROM @extschema@.people p
    WHERE p.id = export_document.subject;
    v_known := coalesce(v_known, false);
    SELECT pg_catalog.to_jsonb(s) - ARRAY['subject', 'consented', 'objected'] INTO v_state
    FROM @extschema@.subject_state s WHERE s.subject = export_document.subject;

    -- The data: one query per registered table, the profile first; and
    -- the categories of personal data, the tables that hold some.
    SELECT coalesce(pg_catalog.json_agg(
               pg_catalog.json_build_object('table', r.relation::text, 'category', r.category,
                                            'description', r.description, 'subject_column', r.subject_column,
                                            'columns', x.columns, 'rows', x.rows)
               ORDER BY r.relation <> '@extschema@.people'::regclass, NOT r.builtin, r.relation::text), '[]'),
           coalesce(pg_catalog.jsonb_agg(
               pg_catalog.jsonb_build_object('category', coalesce(r.category, r.relation::text),
                                             'description', r.description, 'table', r.relation::text,
                                             'records', x.row_count)
               ORDER BY r.relation <> '@extschema@.people'::regclass, NOT r.builtin, r.relation::text)
               FILTER (WHERE x.row_count > 0), '[]')
    INTO v_tables, v_categories
    FROM @extschema@.registered_tables r
    CROSS JOIN LATERAL @extschema@.export_table(r.relation, r.subject_column, export_document.subject) x;

    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'purpose', e.purpose, 'action', e.action, 'captured_at', e.captured_at,
               'recorded_at', e.recorded_at, 'recorded_by', e.recorded_by, 'source', e.source,
               'method', e.method, 'notice_version', e.notice_version,
               'wording_sha256', pg_catalog.encode(e.wording_hash, 'hex'), 'evidence', e.evidence)
               ORDER BY e.captured_at, e.id), '[]')
    INTO v_consents FROM @extschema@.consent_events e WHERE e.subject = export_document.subject;
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'action', e.action, 'reason', e.reason, 'recorded_at', e.recorded_at,
               'recorded_by', e.recorded_by) ORDER BY e.recorded_at, e.id), '[]')
    INTO v_restrictions FROM @extschema@.restriction_events e WHERE e.subject = export_document.subject;

    -- Purposes lawful for the subject now, and those with consent history.
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'purpose', p.name, 'description', p.description, 'lawful_basis', p.lawful_basis,
               'lawful_basis_reference', 'GDPR Art. 6(1)(' || CASE p.lawful_basis
                   WHEN 'consent' THEN 'a' WHEN 'contract' THEN 'b' WHEN 'legal_obligation' THEN 'c'
                   WHEN 'vital_interests' THEN 'd' WHEN 'public_task' THEN 'e' ELSE 'f' END || ')',
               'special_category', p.special_category,
               'lawful_now', coalesce(x.explanation LIKE 'visible:%', false), 'explanation', x.explanation,
               'consent', CASE c.action WHEN 'grant' THEN 'given' WHEN 'withdraw' THEN 'withdrawn' END,
               'consent_changed_at', c.captured_at,
               'objected', coalesce(o.action = 'object', false), 'objection_changed_at', o.captured_at,
               'retention', p.retention,
               'retention_criteria', CASE WHEN p.retention IS NULL
                   THEN 'No fixed period is declared: the data is kept while this purpose applies and its lawful basis holds.'
                   ELSE 'Kept for at most the retention period (an ISO 8601 duration), then erased or anonymised.' END,
               'recipients', coalesce(pg_catalog.to_jsonb(p.recipients), '[]'))
               ORDER BY p.name), '[]')
    INTO v_purposes
    FROM @extschema@.purposes p
    CROSS JOIN LATERAL (SELECT CASE WHEN v_known THEN @extschema@.explain_access(export_document.subject, p.name)
                               END AS explanation) x
    LEFT JOIN LATERAL (SELECT e.action, e.captured_at FROM @extschema@.consent_events e
                       WHERE e.subject = export_document.subject AND e.purpose = p.name
                         AND e.action IN ('grant', 'withdraw')
                       ORDER BY e.id DESC LIMIT 1) c ON true
    LEFT JOIN LATERAL (SELECT e.action, e.captured_at FROM @extschema@.consent_events e
                       WHERE e.subject = export_document.subject AND e.purpose = p.name
                         AND e.action IN ('object', 'withdraw_objection')
                       ORDER BY e.id DESC LIMIT 1) o ON true
    WHERE x.explanation LIKE 'visible:%' OR c.action IS NOT NULL OR o.action IS NOT NULL;

    -- Recipients of the listed purposes: those the data was or will be disclosed to.
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('recipient', r.recipient,
                                                                       'purposes', r.purposes)
                                         ORDER BY r.recipient), '[]')
    INTO v_recipients
    FROM (SELECT x.recipient, pg_catalog.jsonb_agg(p ->> 'purpose' ORDER BY p ->> 'purpose') AS purposes
          FROM pg_catalog.jsonb_array_elements(v_purposes) AS p,
               pg_catalog.jsonb_array_elements_text(p -> 'recipients') AS x(recipient)
          GROUP BY x.recipient) r;

    -- Where the data comes from.
    SELECT coalesce(pg_catalog.jsonb_agg(s.source ORDER BY s.ord, s.first_at, s.source::text), '[]')
    INTO v_sources
    FROM (SELECT 1 AS ord, v_since AS first_at, pg_catalog.jsonb_build_object(
                     'kind', 'direct', 'since', v_since,
                     'description', 'Provided by you, or recorded by the controller''s application as you used its services') AS source
          WHERE v_known
          UNION ALL
          SELECT 2, min(n.fetched_at), pg_catalog.jsonb_build_object(
                     'kind', 'enrichment', 'source', n.source, 'field', n.field, 'records', count(*),
                     'first_fetched_at', min(n.fetched_at), 'last_fetched_at', max(n.fetched_at))
          FROM @extschema@.enrichments n WHERE n.person_id = export_document.subject
          GROUP BY n.source, n.field
          UNION ALL
          SELECT 3, min(e.captured_at), pg_catalog.jsonb_build_object(
                     'kind', 'consent_capture', 'source', e.source, 'method', e.method, 'events', count(*),
                     'first_captured_at', min(e.captured_at), 'last_captured_at', max(e.captured_at))
          FROM @extschema@.consent_events e
          WHERE e.subject = export_document.subject AND (e.source IS NOT NULL OR e.method IS NOT NULL)
          GROUP BY e.source, e.method) s;

    -- The ledgers are categories too.
    SELECT v_categories || coalesce(pg_catalog.jsonb_agg(c.category ORDER BY c.n), '[]') INTO v_categories
    FROM (SELECT 1 AS n, pg_catalog.jsonb_build_object('category', 'consent',
                     'description', 'Your consents, their withdrawals and your objections, with where and how they were recorded',
                     'table', 'consent_history', 'records', pg_catalog.jsonb_array_length(v_consents)) AS category
          WHERE pg_catalog.jsonb_array_length(v_consents) > 0
          UNION ALL
          SELECT 2, pg_catalog.jsonb_build_object('category', 'restriction',
                     'description', 'Restrictions of processing and their lifting',
                     'table', 'restriction_history', 'records', pg_catalog.jsonb_array_length(v_restrictions)) AS category
          WHERE pg_catalog.jsonb_array_length(v_restrictions) > 0) c;

    RETURN pg_catalog.json_build_object(
        'format', 'gdprcrm subject access export',
        'format_version', 1,
        'generated_at', pg_catalog.now(),
        'time_zone', pg_catalog.current_setting('TimeZone'),
        'controller', pg_catalog.jsonb_build_object(
            'project_id', project,
            'project', (SELECT j.name FROM @extschema@.projects j WHERE j.id = project)),
        'subject', pg_catalog.jsonb_build_object(
            'id', export_document.subject, 'known', v_known,
            'erased', coalesce((v_state ->> 'erased_at') IS NOT NULL, false),
            'state', coalesce(v_state, '{}')),
        'notes', CASE WHEN (v_state ->> 'erased_at') IS NOT NULL THEN pg_catalog.jsonb_build_array(
            'The subject was erased: the data key was destroyed, and encrypted values, which can no longer be read, are null.')
            ELSE '[]' END,
        'article_15', pg_catalog.jsonb_build_object(
            'purposes', v_purposes,
            'categories_of_personal_data', v_categories,
            'recipients', v_recipients,
            'retention', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                  'purpose', p -> 'purpose', 'retention', p -> 'retention',
                                  'criteria', p -> 'retention_criteria')), '[]')
                          FROM pg_catalog.jsonb_array_elements(v_purposes) AS p),
            'rights', pg_catalog.jsonb_build_object(
                'access', 'You may obtain a copy of your personal data and the information in this document (GDPR Art. 15).',
                'rectification', 'You may have inaccurate data about you corrected and incomplete data completed (GDPR Art. 16).',
                'erasure', 'You may have your data erased where it is no longer needed, you withdraw consent, you object or it was processed unlawfully (GDPR Art. 17).',
                'restriction', 'You may have the processing of your data restricted while its accuracy or lawfulness is checked (GDPR Art. 18).',
                'objection', 'You may object to processing based on legitimate interests or a public task, and at any time to direct marketing (GDPR Art. 21).',
                'portability', 'You may receive the data you provided in a structured, machine-readable form such as this one and have it sent to another controller (GDPR Art. 20).',
                'withdraw_consent', 'Where processing is based on your consent, you may withdraw it at any time, without affecting processing before the withdrawal (GDPR Art. 7(3)).'),
            'complaint', 'You have the right to lodge a complaint with a supervisory authority, in particular in the Member State of your habitual residence, place of work or place of the alleged infringement (GDPR Art. 77).',
            'sources', v_sources,
            'automated_decision_making', pg_catalog.jsonb_build_object(
                'used', false,
                'explanation', 'No decision about you is based solely on automated processing, including profiling (GDPR Art. 22).')),
        'data', v_tables,
        'consent_history', v_consents,
        'restrictions', v_restrictions);
END $$;
COMMENT ON FUNCTION @extschema@.export_document(bigint, bigint) IS
    'The export of a subject as one JSON document, unchecked and unlogged (for the exports)';

/*
 * The CSV documents of a subject: one per registered table (the profile
 * first), then the consent and the restriction history.
 */
CREATE FUNCTION @extschema@.export_csv(subject bigint)
RETURNS TABLE (table_name text, csv text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET bytea_output = 'hex' AS $$
BEGIN
    RETURN QUERY
        SELECT r.relation::text, @extschema@.export_table_csv(r.relation, r.subject_column, export_csv.subject)
        FROM @extschema@.registered_tables r
        ORDER BY r.relation <> '@extschema@.people'::regclass, NOT r.builtin, r.relation::text;
    RETURN QUERY
        SELECT 'consent_history'::text,
               'id,purpose,action,captured_at,recorded_at,recorded_by,source,method,notice_version,wording_sha256,evidence'
               || E'\r\n' || coalesce(pg_catalog.string_agg(
                   @extschema@.csv_field(e.id::text) || ',' || @extschema@.csv_field(e.purpose) || ',' ||
                   @extschema@.csv_field(e.action) || ',' || @extschema@.csv_field(e.captured_at::text) || ',' ||
                   @extschema@.csv_field(e.recorded_at::text) || ',' || @extschema@.csv_field(e.recorded_by::text) || ',' ||
                   @extschema@.csv_field(e.source) || ',' || @extschema@.csv_field(e.method) || ',' ||
                   @extschema@.csv_field(e.notice_version) || ',' ||
                   @extschema@.csv_field(pg_catalog.encode(e.wording_hash, 'hex')) || ',' ||
                   @extschema@.csv_field(e.evidence::text) || E'\r\n', '' ORDER BY e.captured_at, e.id), '')
        FROM @extschema@.consent_events e WHERE e.subject = export_csv.subject;
    RETURN QUERY
        SELECT 'restriction_history'::text,
               'id,action,reason,recorded_at,recorded_by' || E'\r\n' || coalesce(pg_catalog.string_agg(
                   @extschema@.csv_field(e.id::text) || ',' || @extschema@.csv_field(e.action) || ',' ||
                   @extschema@.csv_field(e.reason) || ',' || @extschema@.csv_field(e.recorded_at::text) || ',' ||
                   @extschema@.csv_field(e.recorded_by::text) || E'\r\n', '' ORDER BY e.recorded_at, e.id), '')
        FROM @extschema@.restriction_events e WHERE e.subject = export_csv.subject;
END $$;
COMMENT ON FUNCTION @extschema@.export_csv(bigint) IS
    'The export of a subject as CSV documents, unchecked and unlogged (for the exports)';

/*
 * Helpers of the HTML export, plain SQL without SET so that they are
 * inlined into its queries (every name schema-qualified instead): a jsonb
 * value as escaped text (strings unquoted, NULL as nothing), a timestamp
 * as "2026-05-01 14:30" in the session's time zone, and an object as
 * name/value pairs (anything else as escaped JSON).
 */
CREATE FUNCTION @extschema@.html_value(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT @extschema@.html_escape(CASE pg_catalog.jsonb_typeof(value)
                                       WHEN 'string' THEN value OPERATOR(pg_catalog.#>>) '{}'
                                       WHEN 'null' THEN NULL
                                       ELSE value::pg_catalog.text END)
$$;
COMMENT ON FUNCTION @extschema@.html_value(jsonb) IS
    'A jsonb value as HTML-escaped text (strings unquoted), for the HTML export';

CREATE FUNCTION @extschema@.html_time(value text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.to_char(value::pg_catalog.timestamptz, 'YYYY-MM-DD HH24:MI')
$$;
COMMENT ON FUNCTION @extschema@.html_time(text) IS
    'A timestamp as YYYY-MM-DD HH24:MI in the session''s time zone, for the HTML export';

CREATE FUNCTION @extschema@.html_pairs(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(value) OPERATOR(pg_catalog.=) 'object' THEN
               (SELECT pg_catalog.string_agg('<span class="pair"><span class="k" dir="auto">'
                                             OPERATOR(pg_catalog.||) @extschema@.html_escape(x.key)
                                             OPERATOR(pg_catalog.||) '</span> <bdi>'
                                             OPERATOR(pg_catalog.||) coalesce(@extschema@.html_value(x.value), '')
                                             OPERATOR(pg_catalog.||) '</bdi></span>', ' ' ORDER BY x.key)
                FROM pg_catalog.jsonb_each(value) AS x)
           ELSE @extschema@.html_value(value) END
$$;
COMMENT ON FUNCTION @extschema@.html_pairs(jsonb) IS
    'A jsonb object as HTML name/value pairs (anything else as escaped JSON), for the HTML export';

/*
 * The HTML document of an export, rendered from its JSON document: one
 * self-contained page a person can read and print.  Every value goes
 * through html_escape and sits in an element with dir="auto" (or in a
 * bdi), so that right-to-left text keeps its direction inside English
 * sentences.  The Content-Security-Policy allows inline styles and
 * nothing else: even markup that slipped past the escaping could neither
 * run a script nor load anything.
 */
CREATE FUNCTION @extschema@.export_html(document json) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_builtin text[] := ARRAY['@extschema@.people'::regclass::text, '@extschema@.events'::regclass::text,
                              '@extschema@.messages'::regclass::text, '@extschema@.enrichments'::regclass::text];
    doc jsonb;          -- the document, each table without its rows
    v_data json;
    v_tables jsonb;
    v_rows json[];      -- the rows of each table of doc -> 'data', in order
    v_person jsonb;
    v_events json;
    v_messages json;
    v_enrichments json;
    v_a15 jsonb;
    v_project text;
    v_name text;
    v_none text;
    v_html text[];
    v_part text;
BEGIN
    -- Taken apart once, the rows kept as JSON: building a large jsonb
    -- value costs more than the page.
    SELECT pg_catalog.jsonb_object_agg(e.key, e.value::jsonb) FILTER (WHERE e.key <> 'data'),
           (pg_catalog.array_agg(e.value) FILTER (WHERE e.key = 'data'))[1]
    INTO doc, v_data FROM pg_catalog.json_each(document) AS e;
    SELECT pg_catalog.jsonb_agg(t.meta ORDER BY t.n), pg_catalog.array_agg(t.rows ORDER BY t.n)
    INTO v_tables, v_rows
    FROM (SELECT x.n, pg_catalog.jsonb_object_agg(f.key, f.value::jsonb) FILTER (WHERE f.key <> 'rows') AS meta,
                 (pg_catalog.array_agg(f.value) FILTER (WHERE f.key = 'rows'))[1] AS rows
          FROM pg_catalog.json_array_elements(v_data) WITH ORDINALITY AS x(t, n), pg_catalog.json_each(x.t) AS f
          GROUP BY x.n) t;
    doc := doc || pg_catalog.jsonb_build_object('data', coalesce(v_tables, '[]'));
    v_a15 := doc -> 'article_15';
    v_project := coalesce(doc #>> '{controller,project}', 'us');
    v_none := CASE WHEN (doc #>> '{subject,erased}')::boolean THEN '<span class="muted">unreadable: erased</span>'
                   ELSE '<span class="muted">none recorded</span>' END;
    SELECT (v_rows[t.n] -> 0)::jsonb INTO v_person
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[1];
    SELECT v_rows[t.n] INTO v_events
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[2];
    SELECT v_rows[t.n] INTO v_messages
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[3];
    SELECT v_rows[t.n] INTO v_enrichments
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[4];
    v_events := coalesce(v_events, '[]');
    v_messages := coalesce(v_messages, '[]');
    v_enrichments := coalesce(v_enrichments, '[]');
    v_name := coalesce(v_person ->> 'name', v_person ->> 'email', v_person ->> 'external_id',
                       'person ' || (doc #>> '{subject,id}'));

    v_html := ARRAY[
'<!DOCTYPE html>
<html lang="en" dir="ltr">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''; base-uri ''none''; form-action ''none''">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="color-scheme" content="light">
<title>Personal data held about ' || @extschema@.html_escape(v_name) || ' by ' || @extschema@.html_escape(v_project) || '</title>
<style>
:root { --ink: #1d2733; --muted: #5b6b7c; --line: #dfe5ec; --soft: #f3f6f9; --accent: #24527a; --ok: #1d6b3f; --off: #8a4b08; }
* { box-sizing: border-box; }
html { background: #e9eef3; }
body { margin: 0; color: var(--ink); font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Noto Sans Arabic", "Noto Sans Hebrew", Arial, sans-serif, "Noto Color Emoji", "Apple Color Emoji", "Segoe UI Emoji"; }
main { max-width: 62rem; margin: 2rem auto; padding: 2.5rem 3rem 2rem; background: #fff; border-radius: 10px; box-shadow: 0 2px 14px rgba(20, 40, 60, .12); }
header.cover { border-bottom: 3px solid var(--accent); padding-bottom: 1.2rem; }
.kicker { margin: 0; color: var(--accent); font-weight: 600; letter-spacing: .08em; text-transform: uppercase; font-size: .8rem; }
h1 { margin: .2rem 0 .4rem; font-size: 2rem; line-height: 1.2; }
.lead { margin: 0 0 1rem; font-size: 1.1rem; color: var(--muted); }
.lead strong { color: var(--ink); }
h2 { margin: 2.4rem 0 .8rem; padding-bottom: .3rem; font-size: 1.3rem; color: var(--accent); border-bottom: 1px solid var(--line); }
h3 { margin: 1.4rem 0 .4rem; font-size: 1.05rem; }
p { margin: .4rem 0 .8rem; }
.muted { color: var(--muted); }
.intro { color: var(--muted); margin-top: -.3rem; }
dl.facts { display: grid; grid-template-columns: minmax(9rem, max-content) 1fr; gap: .35rem 1.5rem; margin: .6rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav.toc { margin: 1.4rem 0 0; padding: .9rem 1.2rem; background: var(--soft); border-radius: 8px; }
nav.toc h2 { margin: 0 0 .3rem; border: 0; padding: 0; font-size: 1rem; color: var(--ink); }
nav.toc ol { margin: 0; padding-inline-start: 1.3rem; columns: 2; column-gap: 2rem; }
nav.toc a { color: var(--accent); text-decoration: none; }
.notice { margin: 1rem 0; padding: .8rem 1rem; border-inline-start: 4px solid var(--off); background: #fdf4e7; border-radius: 4px; }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; margin: .4rem 0 1rem; }
th, td { padding: .4rem .55rem; border-bottom: 1px solid var(--line); text-align: start; vertical-align: top; overflow-wrap: break-word; }
.cap::first-letter { text-transform: uppercase; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.when { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }
td.num { text-align: end; font-variant-numeric: tabular-nums; }
td.body { white-space: pre-wrap; }
.pair { display: inline-block; margin: 0 .3rem .2rem 0; padding: 0 .4rem; border-radius: 4px; background: var(--soft); font-size: .85rem; }
.pair .k { color: var(--muted); }
.url { color: var(--muted); font-size: .85rem; overflow-wrap: anywhere; }
.purposes { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: .9rem; }
.purpose { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; break-inside: avoid; }
.purpose h3 { margin: 0 0 .2rem; display: flex; gap: .6rem; align-items: baseline; justify-content: space-between; }
.purpose dl.facts { grid-template-columns: max-content 1fr; font-size: .9rem; }
.badge { font-size: .75rem; font-weight: 600; padding: .1rem .5rem; border-radius: 999px; white-space: nowrap; }
.badge.on { background: #e3f3e9; color: var(--ok); }
.badge.off { background: #f6ece0; color: var(--off); }
ul.plain { padding-inline-start: 1.2rem; }
ul.plain li { margin: .25rem 0; }
footer { margin-top: 2.5rem; padding-top: 1rem; border-top: 1px solid var(--line); color: var(--muted); font-size: .85rem; }
@page { margin: 16mm 14mm; }
@media print {
  html, body { background: #fff; }
  body { font-size: 10pt; }
  main { max-width: none; margin: 0; padding: 0; border-radius: 0; box-shadow: none; }
  nav.toc { display: none; }
  h2 { break-after: avoid; }
  h3 { break-after: avoid; }
  tr, .purpose, dl.facts { break-inside: avoid; }
  thead { display: table-header-group; }
  .table-wrap { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
</style>
</head>
<body>
<main>
<header class="cover">
<p class="kicker">Subject access report</p>
<h1>Your personal data</h1>
<p class="lead">held by <strong><bdi>' || @extschema@.html_escape(v_project) || '</bdi></strong> about <strong><bdi>'
    || @extschema@.html_escape(v_name) || '</bdi></strong></p>
<dl class="facts">
<dt>Prepared on</dt><dd>' || @extschema@.html_time(doc ->> 'generated_at') || '</dd>
<dt>Your reference</dt><dd>' || @extschema@.html_value(doc #> '{subject,id}') || '</dd>
<dt>Times are shown in</dt><dd dir="auto">' || @extschema@.html_value(doc -> 'time_zone') || '</dd>
</dl>'];
    SELECT string_agg('<p class="notice" dir="auto">' || @extschema@.html_value(n) || '</p>', E'\n') INTO v_part
    FROM jsonb_array_elements(doc -> 'notes') AS n;
    v_html := v_html || (coalesce(v_part, '') || '</header>
<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>
<li><a href="#who">Who we hold data about</a></li>
<li><a href="#what">What data we hold</a></li>
<li><a href="#why">Why we use it</a></li>
<li><a href="#since">Since when, and for how long</a></li>
<li><a href="#sources">Where the data comes from</a></li>
<li><a href="#recipients">Who we share it with</a></li>
<li><a href="#messages">Messages</a></li>
<li><a href="#events">Events and page views</a></li>
<li><a href="#consent">Consent history</a></li>
<li><a href="#restrictions">Restrictions of processing</a></li>
<li><a href="#other">Other records</a></li>
<li><a href="#automated">Automated decisions</a></li>
<li><a href="#rights">Your rights</a></li>
</ol></nav>');

    -- Who.
    v_html := v_html || ('<section id="who"><h2>Who we hold data about</h2>
<dl class="facts">
<dt>Name</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'name'), v_none) || '</dd>
<dt>Email</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'email'), v_none) || '</dd>
<dt>Phone</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'phone'), v_none) || '</dd>
<dt>Your id in our application</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'external_id'), '<span class="muted">none</span>') || '</dd>
<dt>Profile</dt><dd>' || CASE v_person ->> 'status' WHEN 'anonymous' THEN 'anonymous visitor'
                                   WHEN 'merged' THEN 'merged into another profile'
                                   WHEN 'identified' THEN 'identified person'
                                   ELSE '<span class="muted">no profile</span>' END || '</dd>
<dt>Other details</dt><dd>' || coalesce(nullif(@extschema@.html_pairs(v_person -> 'traits'), ''), '<span class="muted">none</span>') || '</dd>
</dl></section>');

    -- What.
    SELECT string_agg(format('<tr><td class="cap" dir="auto">%s</td><td dir="auto">%s</td><td class="num">%s</td></tr>',
                             @extschema@.html_value(c -> 'category'), @extschema@.html_value(c -> 'description'), @extschema@.html_value(c -> 'records')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'categories_of_personal_data') WITH ORDINALITY AS x(c, n);
    v_html := v_html || ('<section id="what"><h2>What data we hold</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>We hold no data about you.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>Category</th><th>What it is</th><th>Records</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Why.
    SELECT string_agg(format('<div class="purpose"><h3><bdi>%s</bdi><span class="badge %s">%s</span></h3><p dir="auto">%s</p><dl class="facts"><dt>Legal basis</dt><dd>%s</dd>%s%s<dt>Kept for</dt><dd>%s</dd><dt>Shared with</dt><dd dir="auto">%s</dd></dl></div>',
                             @extschema@.html_value(p -> 'purpose'),
                             CASE WHEN (p ->> 'lawful_now')::boolean THEN 'on' ELSE 'off' END,
                             CASE WHEN (p ->> 'lawful_now')::boolean THEN 'in use now' ELSE 'not in use now' END,
                             @extschema@.html_value(p -> 'description'),
                             CASE p ->> 'lawful_basis'
                                 WHEN 'consent' THEN 'your consent'
                                 WHEN 'contract' THEN 'a contract with you, or steps you asked for before one'
                                 WHEN 'legal_obligation' THEN 'a legal obligation we must meet'
                                 WHEN 'vital_interests' THEN 'protecting your or someone else''s vital interests'
                                 WHEN 'public_task' THEN 'a task in the public interest'
                                 ELSE 'our legitimate interests' END
                                 || ' <span class="muted">(' || @extschema@.html_value(p -> 'lawful_basis_reference') || ')</span>',
                             CASE WHEN p ->> 'consent' IS NOT NULL THEN
                                 '<dt>Your consent</dt><dd>' || @extschema@.html_value(p -> 'consent') || ' on '
                                 || @extschema@.html_time(p ->> 'consent_changed_at') || '</dd>'
                                  WHEN p ->> 'lawful_basis' = 'consent' THEN '<dt>Your consent</dt><dd>not given</dd>'
                                  ELSE '' END,
                             CASE WHEN p ->> 'objection_changed_at' IS NOT NULL THEN
                                 '<dt>Your objection</dt><dd>' || CASE WHEN (p ->> 'objected')::boolean
                                     THEN 'made on ' ELSE 'withdrawn on ' END
                                 || @extschema@.html_time(p ->> 'objection_changed_at') || '</dd>'
                                  ELSE '' END,
                             CASE WHEN p ->> 'retention' IS NULL THEN 'no fixed period: while this purpose applies'
                                  ELSE @extschema@.html_escape(@extschema@.export_duration((p ->> 'retention')::interval)) END,
                             coalesce((SELECT string_agg(@extschema@.html_escape(r), ', ' ORDER BY n)
                                       FROM jsonb_array_elements_text(p -> 'recipients') WITH ORDINALITY AS y(r, n)),
                                      '<span class="muted">nobody</span>')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'purposes') WITH ORDINALITY AS x(p, n);
    v_html := v_html || ('<section id="why"><h2>Why we use it</h2><p class="intro">Each purpose for which we use your data, the law that allows it, and whether it applies to you now.</p>'
        || CASE WHEN v_part IS NULL THEN '<p>We use your data for no purpose.</p>'
                ELSE '<div class="purposes">' || v_part || '</div>' END || '</section>');

    -- Since when.
    SELECT '<section id="since"><h2>Since when, and for how long</h2><dl class="facts">'
           || '<dt>First recorded</dt><dd>' || coalesce(@extschema@.html_time(v_person ->> 'created_at'), '<span class="muted">unknown</span>') || '</dd>'
           || coalesce('<dt>First seen</dt><dd>' || @extschema@.html_time(v_person ->> 'first_seen_at') || '</dd>', '')
           || coalesce('<dt>Last seen</dt><dd>' || @extschema@.html_time(v_person ->> 'last_seen_at') || '</dd>', '')
           || coalesce('<dt>Profile last changed</dt><dd>' || @extschema@.html_time(v_person ->> 'updated_at') || '</dd>', '')
           || coalesce('<dt>Events recorded</dt><dd>' || to_char(min((e ->> 'occurred_at')::timestamptz), 'YYYY-MM-DD HH24:MI')
                       || ' to ' || to_char(max((e ->> 'occurred_at')::timestamptz), 'YYYY-MM-DD HH24:MI') || '</dd>', '')
           || '</dl><h3>How long we keep it</h3><ul class="plain">'
           || coalesce((SELECT string_agg('<li><bdi>' || @extschema@.html_value(p -> 'purpose') || '</bdi>: '
                                          || CASE WHEN p ->> 'retention' IS NULL
                                                  THEN @extschema@.html_value(p -> 'retention_criteria')
                                                  ELSE 'at most ' || @extschema@.html_escape(@extschema@.export_duration((p ->> 'retention')::interval)) END
                                          || '</li>', '' ORDER BY n)
                        FROM jsonb_array_elements(v_a15 -> 'purposes') WITH ORDINALITY AS x(p, n)),
                       '<li>No purpose applies.</li>')
           || '</ul></section>'
    INTO v_part FROM (SELECT j.value::jsonb AS e FROM json_array_elements(v_events) AS j OFFSET 0) AS x;
    v_html := v_html || v_part;

    -- Sources.
    SELECT string_agg('<li dir="auto">' || CASE s ->> 'kind'
               WHEN 'direct' THEN 'Provided by you, or recorded by <bdi>' || @extschema@.html_escape(v_project)
                   || '</bdi>''s application as you used its services, since ' || @extschema@.html_time(s ->> 'since') || '.'
               WHEN 'enrichment' THEN 'Public-profile data (<bdi>' || @extschema@.html_value(s -> 'field') || '</bdi>) from <bdi>'
                   || @extschema@.html_value(s -> 'source') || '</bdi> (' || @extschema@.html_value(s -> 'records')
                   || CASE WHEN (s ->> 'records')::integer = 1 THEN ' record' ELSE ' records' END
                   || ', last fetched ' || @extschema@.html_time(s ->> 'last_fetched_at') || ').'
               ELSE 'Consent records captured' || coalesce(' through <bdi>' || @extschema@.html_value(s -> 'source') || '</bdi>', '')
                   || coalesce(' by <bdi>' || @extschema@.html_value(s -> 'method') || '</bdi>', '') || ' ('
                   || @extschema@.html_value(s -> 'events') || CASE WHEN (s ->> 'events')::integer = 1 THEN ' record' ELSE ' records' END
                   || ', first on ' || @extschema@.html_time(s ->> 'first_captured_at') || ').' END
               || '</li>', E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'sources') WITH ORDINALITY AS x(s, n);
    v_html := v_html || ('<section id="sources"><h2>Where the data comes from</h2><ul class="plain">'
        || coalesce(v_part, '<li>We hold no data about you.</li>') || '</ul>');
    SELECT string_agg(format('<tr><td class="when">%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td dir="auto">%s</td></tr>',
                             @extschema@.html_time(r ->> 'fetched_at'), @extschema@.html_value(r -> 'source'), @extschema@.html_value(r -> 'field'),
                             @extschema@.html_pairs(r -> 'value')), E'\n' ORDER BY n)
    INTO v_part FROM (SELECT j.value::jsonb AS r, j.n FROM json_array_elements(v_enrichments) WITH ORDINALITY AS j(value, n)
                      OFFSET 0) AS x;
    v_html := v_html || (CASE WHEN v_part IS NULL THEN '' ELSE
        '<h3>Data from other sources</h3><div class="table-wrap"><table><thead><tr><th>Fetched</th><th>Source</th><th>Field</th><th>Value</th></tr></thead><tbody>'
        || v_part || '</tbody></table></div>' END || '</section>');

    -- Recipients.
    SELECT string_agg(format('<tr><td dir="auto">%s</td><td dir="auto">%s</td></tr>', @extschema@.html_value(r -> 'recipient'),
                             (SELECT string_agg(@extschema@.html_escape(u), ', ' ORDER BY m)
                              FROM jsonb_array_elements_text(r -> 'purposes') WITH ORDINALITY AS y(u, m))),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'recipients') WITH ORDINALITY AS x(r, n);
    v_html := v_html || ('<section id="recipients"><h2>Who we share it with</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>We have declared no recipient of your data.</p>'
                ELSE '<p class="intro">Recipients, or categories of recipients, to whom your data is or may be disclosed.</p><div class="table-wrap"><table><thead><tr><th>Recipient</th><th>For the purposes</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Messages.
    SELECT string_agg(format('<tr><td class="when">%s</td><td>%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td class="body" dir="auto">%s</td></tr>',
                             @extschema@.html_time(m ->> 'sent_at'),
                             CASE m ->> 'direction' WHEN 'inbound' THEN 'from you' WHEN 'outbound' THEN 'to you'
                                  ELSE @extschema@.html_value(m -> 'direction') END,
                             @extschema@.html_value(m -> 'channel'), @extschema@.html_value(m -> 'subject'), @extschema@.html_value(m -> 'body')),
                      E'\n' ORDER BY n)
    INTO v_part FROM (SELECT j.value::jsonb AS m, j.n FROM json_array_elements(v_messages) WITH ORDINALITY AS j(value, n)
                      OFFSET 0) AS x;
    v_html := v_html || ('<section id="messages"><h2>Messages</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>No messages.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>When</th><th>Sent</th><th>Channel</th><th>Subject</th><th>Message</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Events.
    SELECT string_agg(format('<tr><td class="when">%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td>%s</td></tr>',
                             @extschema@.html_time(e ->> 'occurred_at'),
                             CASE WHEN e ->> 'kind' = 'page_view' THEN 'viewed a page' ELSE @extschema@.html_value(e -> 'name') END,
                             concat_ws('<br>', '<bdi>' || @extschema@.html_value(e -> 'title') || '</bdi>',
                                       '<span class="url">' || @extschema@.html_value(e -> 'url') || '</span>',
                                       '<span class="url">from ' || @extschema@.html_value(e -> 'referrer') || '</span>'),
                             coalesce(p.pairs, CASE WHEN jsonb_typeof(e -> 'properties') <> 'object'
                                                    THEN @extschema@.html_value(e -> 'properties') END, '')),
                      E'\n' ORDER BY n)
    INTO v_part FROM (SELECT j.value::jsonb AS e, j.n FROM json_array_elements(v_events) WITH ORDINALITY AS j(value, n)
                      OFFSET 0) AS x
    -- html_pairs, written out: a function with a subquery is not inlined,
    -- and calling it for each of many events costs more than the rest.
    LEFT JOIN LATERAL (SELECT string_agg('<span class="pair"><span class="k" dir="auto">' || @extschema@.html_escape(k.key)
                                         || '</span> <bdi>' || coalesce(@extschema@.html_value(k.value), '')
                                         || '</bdi></span>', ' ' ORDER BY k.key) AS pairs
                       FROM jsonb_each(CASE WHEN jsonb_typeof(e -> 'properties') = 'object' THEN e -> 'properties' END) AS k
                      ) AS p ON true;
    v_html := v_html || ('<section id="events"><h2>Events and page views</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>No events.</p>'
                ELSE '<p class="intro">' || json_array_length(v_events) || ' recorded, oldest first.</p><div class="table-wrap"><table><thead><tr><th>When</th><th>What</th><th>Page</th><th>Details</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Consent history.
    SELECT string_agg(format('<tr><td class="when">%s</td><td dir="auto">%s</td><td>%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td dir="auto">%s</td></tr>',
                             @extschema@.html_time(c ->> 'captured_at'), @extschema@.html_value(c -> 'purpose'),
                             CASE c ->> 'action' WHEN 'grant' THEN 'you gave consent'
                                 WHEN 'withdraw' THEN 'you withdrew consent' WHEN 'object' THEN 'you objected'
                                 WHEN 'withdraw_objection' THEN 'you withdrew your objection'
                                 ELSE @extschema@.html_value(c -> 'action') END,
                             @extschema@.html_value(c -> 'source'), @extschema@.html_value(c -> 'method'), @extschema@.html_value(c -> 'notice_version')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(doc -> 'consent_history') WITH ORDINALITY AS x(c, n);
    v_html := v_html || ('<section id="consent"><h2>Consent history</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>No consent or objection has been recorded.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>When</th><th>Purpose</th><th>What happened</th><th>Where</th><th>How</th><th>Notice</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Restrictions.
    SELECT string_agg(format('<tr><td class="when">%s</td><td>%s</td><td dir="auto">%s</td></tr>',
                             @extschema@.html_time(r ->> 'recorded_at'),
                             CASE r ->> 'action' WHEN 'restrict' THEN 'processing restricted'
                                 WHEN 'lift' THEN 'restriction lifted' ELSE @extschema@.html_value(r -> 'action') END,
                             @extschema@.html_value(r -> 'reason')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(doc -> 'restrictions') WITH ORDINALITY AS x(r, n);
    v_html := v_html || ('<section id="restrictions"><h2>Restrictions of processing</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>Processing of your data has never been restricted.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>When</th><th>What happened</th><th>Reason</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Every other registered table, as it is.
    SELECT string_agg('<h3 class="cap" dir="auto">' || coalesce(@extschema@.html_value(t -> 'category'), @extschema@.html_value(t -> 'table'))
                      || '</h3>' || coalesce('<p class="muted" dir="auto">' || @extschema@.html_value(t -> 'description') || '</p>', '')
                      || '<div class="table-wrap"><table><thead><tr>'
                      || (SELECT string_agg('<th dir="auto">' || @extschema@.html_value(c -> 'name') || '</th>', '' ORDER BY m)
                          FROM jsonb_array_elements(t -> 'columns') WITH ORDINALITY AS y(c, m))
                      || '</tr></thead><tbody>'
                      || (SELECT string_agg('<tr>' || (SELECT string_agg('<td dir="auto">'
                                                                          || coalesce(@extschema@.html_value(z.r -> (c ->> 'name')), '')
                                                                          || '</td>', '' ORDER BY m)
                                                       FROM jsonb_array_elements(t -> 'columns') WITH ORDINALITY AS y(c, m))
                                            || '</tr>', E'\n' ORDER BY z.k)
                          FROM (SELECT j.value::jsonb AS r, j.k FROM json_array_elements(v_rows[x.n]) WITH ORDINALITY AS j(value, k)
                                OFFSET 0) AS z)
                      || '</tbody></table></div>', E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS x(t, n)
    WHERE NOT (t ->> 'table' = ANY (v_builtin)) AND json_array_length(v_rows[x.n]) > 0;
    v_html := v_html || ('<section id="other"><h2>Other records</h2>'
        || coalesce(v_part, '<p>No other records.</p>') || '</section>');

    v_html := v_html || ('<section id="automated"><h2>Automated decisions</h2><p>'
        || @extschema@.html_value(v_a15 #> '{automated_decision_making,explanation}') || '</p></section>');

    SELECT string_agg('<li>' || @extschema@.html_value(v_a15 #> ARRAY['rights', k]) || '</li>', E'\n' ORDER BY n)
    INTO v_part
    FROM unnest(ARRAY['access', 'rectification', 'erasure', 'restriction', 'objection', 'portability',
                      'withdraw_consent']) WITH ORDINALITY AS x(k, n);
    v_html := v_html || ('<section id="rights"><h2>Your rights</h2><ul class="plain">' || coalesce(v_part, '')
        || '</ul><p>' || @extschema@.html_value(v_a15 -> 'complaint') || '</p></section>');

    v_html := v_html || ('<footer><p>Prepared on ' || @extschema@.html_time(doc ->> 'generated_at') || ' by <bdi>'
        || @extschema@.html_escape(v_project) || '</bdi> with gdprcrm (' || @extschema@.html_value(doc -> 'format') || ', format version '
        || @extschema@.html_value(doc -> 'format_version') || '). The same data is available in machine-readable form (JSON and CSV).</p></footer>
</main>
</body>
</html>
');
    RETURN array_to_string(v_html, E'\n');
END $$;
COMMENT ON FUNCTION @extschema@.export_html(json) IS
    'The HTML document of an export, rendered from its JSON document (for the exports)';

/*
 * The entry points.  SECURITY DEFINER, owned by the extension's owner: the
 * export reads past every team and purpose filter, and decrypts.  The
 * caller is checked first and the export logged before anything is read;
 * the document is then built by one STABLE function, on one snapshot.
 */
CREATE FUNCTION @extschema@.sar_export(subject bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
BEGIN
    -- Erasure takes the same lock: an export sees the subject wholly before
    -- a purge or not at all, never half decrypted.
    PERFORM @extschema@.lock_subject_state(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'export', 'jsonb');
    RETURN @extschema@.export_document(subject, v_project)::jsonb;
END $$;
COMMENT ON FUNCTION @extschema@.sar_export(bigint) IS
    'Subject access export (GDPR Art. 15, 20): every registered row of the subject, decrypted, with purposes, recipients, sources and rights, as jsonb; logged';

CREATE FUNCTION @extschema@.sar_export_csv(subject bigint) RETURNS TABLE (table_name text, csv text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
BEGIN
    -- Erasure takes the same lock: an export sees the subject wholly before
    -- a purge or not at all, never half decrypted.
    PERFORM @extschema@.lock_subject_state(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'export', 'csv');
    RETURN QUERY SELECT c.table_name, c.csv FROM @extschema@.export_csv(subject) c;
END $$;
COMMENT ON FUNCTION @extschema@.sar_export_csv(bigint) IS
    'Subject access export as CSV: one document per registered table, then the consent and restriction history; logged';

CREATE FUNCTION @extschema@.sar_export_html(subject bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
BEGIN
    -- Erasure takes the same lock: an export sees the subject wholly before
    -- a purge or not at all, never half decrypted.
    PERFORM @extschema@.lock_subject_state(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'export', 'html');
    RETURN @extschema@.export_html(@extschema@.export_document(subject, v_project));
END $$;
COMMENT ON FUNCTION @extschema@.sar_export_html(bigint) IS
    'Subject access export as one self-contained, printable HTML document; logged';

/* The exports are for administrators; their helpers for nobody. */
REVOKE ALL ON FUNCTION @extschema@.html_escape(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.csv_field(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_columns(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_order(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_table(regclass, name, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_table_csv(regclass, name, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_duration(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_document(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_csv(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.html_value(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.html_time(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.html_pairs(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_html(json) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.sar_export(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.sar_export_csv(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.sar_export_html(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@.sar_export(bigint),
    @extschema@.sar_export_csv(bigint),
    @extschema@.sar_export_html(bigint)
    TO gdprcrm_admin;
