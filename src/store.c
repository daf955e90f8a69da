/*-------------------------------------------------------------------------
 * store.c
 *	  gdprcrm's key and team tables, read and written as their owner.
 *
 * gdprcrm.subject_keys and gdprcrm.database_keys hold wrapped keys and
 * tombstones; the team queries read project_members and projects, and a
 * key's lookup the person's project.  No application role has any
 * privilege on the key tables; the
 * functions here run their queries as the tables' owner, the way a
 * SECURITY DEFINER function would, with a restricted security context so
 * that nothing the caller set up (search_path objects, triggers of theirs)
 * runs with that identity.  Every query names its objects and operators
 * with their schema.
 *
 * Reads use the latest snapshot rather than the transaction's: once a key
 * is destroyed and committed, even a REPEATABLE READ transaction that
 * started earlier must not load it again.  (In parallel mode PostgreSQL
 * allows no new snapshot, and the statement's own is used.)
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "access/parallel.h"
#include "utils/array.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "compat.h"
#include "store.h"

#define STORE_SCHEMA "gdprcrm"

typedef struct StoreSession
{
	Oid			saved_user;
	int			saved_context;
} StoreSession;

/* Plans survive across calls; the plan cache re-plans them when needed. */
static SPIPlanPtr fetch_subject_plan = NULL;
static SPIPlanPtr fetch_subject_reach_plan = NULL;
static SPIPlanPtr insert_subject_plan = NULL;
static SPIPlanPtr insert_subjects_plan = NULL;
static SPIPlanPtr destroy_subject_plan = NULL;
static SPIPlanPtr fetch_database_plan = NULL;
static SPIPlanPtr insert_database_plan = NULL;
static SPIPlanPtr scan_purposes_plan = NULL;
static SPIPlanPtr team_projects_plan = NULL;
static SPIPlanPtr all_projects_plan = NULL;

/*
 * store_owner_if_installed
 *	  Owner of gdprcrm.subject_keys, which owns every gdprcrm table, or
 *	  InvalidOid when gdprcrm is not installed in this database.
 */
static Oid
store_owner_if_installed(void)
{
	Oid			nsp = get_namespace_oid(STORE_SCHEMA, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("subject_keys", nsp) : InvalidOid;
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		return InvalidOid;
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* The same, or an error when gdprcrm is not installed here. */
static Oid
store_owner(void)
{
	Oid			owner = store_owner_if_installed();

	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm is not installed in this database"),
				 errhint("Run CREATE EXTENSION gdprcrm.")));
	return owner;
}

static void
store_begin_as(StoreSession *session, Oid owner)
{
	GetUserIdAndSecContext(&session->saved_user, &session->saved_context);
	SetUserIdAndSecContext(owner, session->saved_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
store_begin(StoreSession *session)
{
	store_begin_as(session, store_owner());
}

/* On error, transaction abort restores the user; no PG_TRY is needed. */
static void
store_end(StoreSession *session)
{
	SPI_finish();
	SetUserIdAndSecContext(session->saved_user, session->saved_context);
}

/*
 * read_snapshot
 *	  The latest snapshot, so that a destroyed key or a withdrawn consent is
 *	  seen at once even by a transaction that started before; in parallel
 *	  mode, where PostgreSQL forbids taking one, the statement's snapshot.
 */
static Snapshot
read_snapshot(void)
{
	return IsInParallelMode() ? GetActiveSnapshot() : GetLatestSnapshot();
}

static SPIPlanPtr
prepare_once(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for gdprcrm key query: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * key_from_row
 *	  Fill out from a key row: version in column version_col (0: there is
 *	  none, version 1), wrapped key in wrapped_col and the wrapping root
 *	  key's fingerprint in the column after it.  A NULL wrapped key is a
 *	  tombstone.
 */
static void
key_from_row(HeapTuple row, TupleDesc desc, int version_col, int wrapped_col,
			 StoredKey *out)
{
	bool		isnull;
	Datum		d;

	memset(out, 0, sizeof(*out));
	out->version = version_col > 0 ?
		DatumGetInt32(SPI_getbinval(row, desc, version_col, &isnull)) : 1;
	d = SPI_getbinval(row, desc, wrapped_col, &isnull);
	out->destroyed = isnull;
	if (!isnull)
	{
		bytea	   *wrapped = DatumGetByteaPP(d);
		char	   *with = SPI_getvalue(row, desc, wrapped_col + 1);

		if (VARSIZE_ANY_EXHDR(wrapped) != KEYRING_WRAPPED_BYTES ||
			with == NULL || strlen(with) != KEYRING_FINGERPRINT_CHARS)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("a stored gdprcrm key is malformed")));
		memcpy(out->wrapped, VARDATA_ANY(wrapped), KEYRING_WRAPPED_BYTES);
		memcpy(out->wrapped_with, with, KEYRING_FINGERPRINT_CHARS + 1);
	}
}

static Datum
wrapped_datum(const StoredKey *key)
{
	bytea	   *b = palloc(VARHDRSZ + KEYRING_WRAPPED_BYTES);

	SET_VARSIZE(b, VARHDRSZ + KEYRING_WRAPPED_BYTES);
	memcpy(VARDATA(b), key->wrapped, KEYRING_WRAPPED_BYTES);
	return PointerGetDatum(b);
}

/*
 * store_fetch_subject_key
 *	  Read a subject's key row as of the latest committed state (and this
 *	  transaction's own changes).  False when the subject has no key row.
 *	  With project non-NULL, also the project of the person with that id
 *	  in *project (0 when there is none), read in the same query, so that
 *	  neither the answer nor its cost says which of the two is missing;
 *	  without, one index probe of the key table only (for callers that
 *	  need no team check, such as superusers).
 */
bool
store_fetch_subject_key(int64 subject, StoredKey *out, int64 *project)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subject)};
	StoreSession session;
	bool		found = false;
	bool		isnull;
	SPIPlanPtr	plan;

	store_begin(&session);
	if (project != NULL)
		plan = prepare_once(&fetch_subject_reach_plan,
							"SELECT k.key_version, k.wrapped_key, k.wrapped_with, p.project_id"
							" FROM (VALUES ($1::pg_catalog.int8)) AS x (subject)"
							" LEFT JOIN " STORE_SCHEMA ".subject_keys k"
							" ON k.subject OPERATOR(pg_catalog.=) x.subject"
							" LEFT JOIN " STORE_SCHEMA ".people p"
							" ON p.id OPERATOR(pg_catalog.=) x.subject",
							1, types);
	else
		plan = prepare_once(&fetch_subject_plan,
							"SELECT key_version, wrapped_key, wrapped_with"
							" FROM " STORE_SCHEMA ".subject_keys"
							" WHERE subject OPERATOR(pg_catalog.=) $1",
							1, types);
	if (SPI_execute_snapshot(plan, values, NULL, read_snapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.subject_keys");
	if (project != NULL)
	{
		Datum		d;

		if (SPI_processed != 1)
			elog(ERROR, "could not read gdprcrm.subject_keys");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
		*project = isnull ? 0 : DatumGetInt64(d);
	}
	if (SPI_processed == 1)
	{
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			key_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, 2, out);
			found = true;
		}
	}
	store_end(&session);
	return found;
}

/*
 * store_insert_subject_key
 *	  Insert a subject's first key.  False when a concurrent transaction
 *	  inserted one first (the caller then reads that one).
 */
bool
store_insert_subject_key(int64 subject, const StoredKey *key)
{
	Oid			types[4] = {INT8OID, INT4OID, BYTEAOID, TEXTOID};
	Datum		values[4];
	StoreSession session;
	bool		inserted;

	values[0] = Int64GetDatum(subject);
	values[1] = Int32GetDatum((int32) key->version);
	values[2] = wrapped_datum(key);
	values[3] = CStringGetTextDatum(key->wrapped_with);

	store_begin(&session);
	prepare_once(&insert_subject_plan,
				 "INSERT INTO " STORE_SCHEMA ".subject_keys"
				 " (subject, key_version, wrapped_key, wrapped_with)"
				 " VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO NOTHING",
				 4, types);
	if (SPI_execute_plan(insert_subject_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write gdprcrm.subject_keys");
	inserted = SPI_processed > 0;
	store_end(&session);
	return inserted;
}

typedef struct SubjectPosition
{
	int64		subject;
	int			position;
} SubjectPosition;

static int
compare_subject_position(const void *a, const void *b)
{
	int64		x = ((const SubjectPosition *) a)->subject;
	int64		y = ((const SubjectPosition *) b)->subject;

	return (x > y) - (x < y);
}

/*
 * store_insert_subject_keys
 *	  Insert the first keys of count distinct subjects in one statement;
 *	  inserted[i] tells whether subjects[i]'s key went in (false: the
 *	  subject already had one, or a concurrent transaction inserted one
 *	  first).  Returns how many went in.
 */
int
store_insert_subject_keys(const int64 *subjects, const StoredKey *keys, int count,
						  bool *inserted)
{
	Oid			types[4] = {INT8ARRAYOID, INT4ARRAYOID, BYTEAARRAYOID, TEXTARRAYOID};
	Datum		values[4];
	Datum	   *ids = palloc(sizeof(Datum) * count);
	Datum	   *versions = palloc(sizeof(Datum) * count);
	Datum	   *wrapped = palloc(sizeof(Datum) * count);
	Datum	   *with = palloc(sizeof(Datum) * count);
	StoreSession session;
	int			done;

	for (int i = 0; i < count; i++)
	{
		ids[i] = Int64GetDatum(subjects[i]);
		versions[i] = Int32GetDatum((int32) keys[i].version);
		wrapped[i] = wrapped_datum(&keys[i]);
		with[i] = CStringGetTextDatum(keys[i].wrapped_with);
		inserted[i] = false;
	}
	values[0] = PointerGetDatum(construct_array(ids, count, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(versions, count, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(wrapped, count, BYTEAOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(with, count, TEXTOID, -1, false, TYPALIGN_INT));

	store_begin(&session);
	prepare_once(&insert_subjects_plan,
				 "INSERT INTO " STORE_SCHEMA ".subject_keys"
				 " (subject, key_version, wrapped_key, wrapped_with)"
				 " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
				 " pg_catalog.unnest($3), pg_catalog.unnest($4))"
				 " ON CONFLICT (subject) DO NOTHING RETURNING subject",
				 4, types);
	if (SPI_execute_plan(insert_subjects_plan, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not write gdprcrm.subject_keys");
	done = (int) SPI_processed;
	if (done > 0)
	{
		/* Match the subjects that went in by binary search, not n x n. */
		SubjectPosition *order = palloc(sizeof(SubjectPosition) * count);

		for (int i = 0; i < count; i++)
		{
			order[i].subject = subjects[i];
			order[i].position = i;
		}
		qsort(order, count, sizeof(SubjectPosition), compare_subject_position);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			SubjectPosition key;
			SubjectPosition *found;

			key.subject = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													  SPI_tuptable->tupdesc, 1, &isnull));
			found = bsearch(&key, order, count, sizeof(SubjectPosition),
							compare_subject_position);
			if (found != NULL)
				inserted[found->position] = true;
		}
		pfree(order);
	}
	store_end(&session);
	return done;
}

/*
 * store_destroy_subject_key
 *	  Replace a subject's wrapped key by a tombstone, or record a tombstone
 *	  for a subject that never had a key, so that none is created later.
 *	  One indexed row either way.  True when this call erased the subject,
 *	  false when it already was.
 */
bool
store_destroy_subject_key(int64 subject)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subject)};
	StoreSession session;
	bool		erased;

	/*
	 * One statement, so that a concurrent first insert of the subject's
	 * key is waited for and then destroyed, never missed.
	 */
	store_begin(&session);
	prepare_once(&destroy_subject_plan,
				 "INSERT INTO " STORE_SCHEMA ".subject_keys AS k"
				 " (subject, key_version, destroyed_at)"
				 " VALUES ($1, 1, pg_catalog.now())"
				 " ON CONFLICT (subject) DO UPDATE"
				 " SET wrapped_key = NULL, wrapped_with = NULL, destroyed_at = pg_catalog.now()"
				 " WHERE k.destroyed_at IS NULL",
				 1, types);
	if (SPI_execute_plan(destroy_subject_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write gdprcrm.subject_keys");
	erased = SPI_processed > 0;
	store_end(&session);
	return erased;
}

/*
 * store_fetch_database_key
 *	  Read the key of a purpose in this database (latest snapshot).
 */
bool
store_fetch_database_key(const char *purpose, StoredKey *out)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(purpose)};
	StoreSession session;
	bool		found;

	store_begin(&session);
	prepare_once(&fetch_database_plan,
				 "SELECT purpose, wrapped_key, wrapped_with"
				 " FROM " STORE_SCHEMA ".database_keys"
				 " WHERE purpose OPERATOR(pg_catalog.=) $1",
				 1, types);
	if (SPI_execute_snapshot(fetch_database_plan, values, NULL,
							 read_snapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.database_keys");
	found = SPI_processed > 0;
	if (found)
		key_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 0, 2, out);
	store_end(&session);
	return found;
}

/*
 * store_insert_database_key
 *	  Insert the key of a purpose; false if another transaction won.
 */
bool
store_insert_database_key(const char *purpose, const StoredKey *key)
{
	Oid			types[3] = {TEXTOID, BYTEAOID, TEXTOID};
	Datum		values[3];
	StoreSession session;
	bool		inserted;

	values[0] = CStringGetTextDatum(purpose);
	values[1] = wrapped_datum(key);
	values[2] = CStringGetTextDatum(key->wrapped_with);

	store_begin(&session);
	prepare_once(&insert_database_plan,
				 "INSERT INTO " STORE_SCHEMA ".database_keys"
				 " (purpose, wrapped_key, wrapped_with)"
				 " VALUES ($1, $2, $3) ON CONFLICT (purpose) DO NOTHING",
				 3, types);
	if (SPI_execute_plan(insert_database_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write gdprcrm.database_keys");
	inserted = SPI_processed > 0;
	store_end(&session);
	return inserted;
}

/*
 * store_rewrap_subject_keys
 *	  Wrap again, under the current root key, up to limit subject keys that
 *	  are wrapped under another one.  Rows locked by others are skipped and
 *	  left for the next call.  Returns how many were rewrapped.
 */
int64
store_rewrap_subject_keys(int limit, RewrapSubjectKey rewrap)
{
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	StoreSession session;
	int64		done = 0;
	SPITupleTable *rows;
	uint64		nrows;

	values[0] = CStringGetTextDatum(keyring_fingerprint());
	values[1] = Int32GetDatum(limit);

	store_begin(&session);
	if (SPI_execute_with_args("SELECT subject, key_version, wrapped_key, wrapped_with"
							  " FROM " STORE_SCHEMA ".subject_keys"
							  " WHERE wrapped_key IS NOT NULL"
							  " AND wrapped_with OPERATOR(pg_catalog.<>) $1"
							  " ORDER BY subject LIMIT $2 FOR UPDATE SKIP LOCKED",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.subject_keys");
	rows = SPI_tuptable;
	nrows = SPI_processed;

	for (uint64 i = 0; i < nrows; i++)
	{
		Oid			utypes[3] = {INT8OID, BYTEAOID, TEXTOID};
		Datum		uvalues[3];
		bool		isnull;
		StoredKey	old;
		StoredKey	fresh;
		int64		subject;

		subject = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull));
		key_from_row(rows->vals[i], rows->tupdesc, 2, 3, &old);

		fresh = old;
		rewrap(subject, &old, fresh.wrapped);

		uvalues[0] = Int64GetDatum(subject);
		uvalues[1] = wrapped_datum(&fresh);
		uvalues[2] = CStringGetTextDatum(keyring_fingerprint());
		if (SPI_execute_with_args("UPDATE " STORE_SCHEMA ".subject_keys"
								  " SET wrapped_key = $2, wrapped_with = $3"
								  " WHERE subject OPERATOR(pg_catalog.=) $1",
								  3, utypes, uvalues, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update gdprcrm.subject_keys");
		done++;
	}
	store_end(&session);
	return done;
}

/*
 * store_rewrap_database_keys
 *	  Wrap every database key again under the current root key.  There are
 *	  a handful, so all are done at once.  Returns how many were rewrapped.
 */
int64
store_rewrap_database_keys(RewrapDatabaseKey rewrap)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	StoreSession session;
	int64		done = 0;
	SPITupleTable *rows;
	uint64		nrows;

	values[0] = CStringGetTextDatum(keyring_fingerprint());
	store_begin(&session);
	if (SPI_execute_with_args("SELECT purpose, wrapped_key, wrapped_with"
							  " FROM " STORE_SCHEMA ".database_keys"
							  " WHERE wrapped_with OPERATOR(pg_catalog.<>) $1"
							  " FOR UPDATE",
							  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.database_keys");
	rows = SPI_tuptable;
	nrows = SPI_processed;

	for (uint64 i = 0; i < nrows; i++)
	{
		Oid			utypes[3] = {TEXTOID, BYTEAOID, TEXTOID};
		Datum		uvalues[3];
		char	   *purpose = SPI_getvalue(rows->vals[i], rows->tupdesc, 1);
		StoredKey	old;
		StoredKey	fresh;

		key_from_row(rows->vals[i], rows->tupdesc, 0, 2, &old);

		fresh = old;
		rewrap(purpose, &old, fresh.wrapped);

		uvalues[0] = CStringGetTextDatum(purpose);
		uvalues[1] = wrapped_datum(&fresh);
		uvalues[2] = CStringGetTextDatum(keyring_fingerprint());
		if (SPI_execute_with_args("UPDATE " STORE_SCHEMA ".database_keys"
								  " SET wrapped_key = $2, wrapped_with = $3"
								  " WHERE purpose OPERATOR(pg_catalog.=) $1",
								  3, utypes, uvalues, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update gdprcrm.database_keys");
		done++;
	}
	store_end(&session);
	return done;
}

/*
 * store_scan_purposes
 *	  Call fn for every row of gdprcrm.purposes (latest snapshot).
 */
void
store_scan_purposes(PurposeRowFn fn, void *arg)
{
	StoreSession session;

	store_begin(&session);
	if (SPI_execute_snapshot(prepare_once(&scan_purposes_plan,
										  "SELECT name, bit, lawful_basis, allowed_when_restricted"
										  " FROM " STORE_SCHEMA ".purposes",
										  0, NULL),
							 NULL, NULL, read_snapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.purposes");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *name = SPI_getvalue(row, desc, 1);
		int			bit = DatumGetInt16(SPI_getbinval(row, desc, 2, &isnull));
		char	   *basis = SPI_getvalue(row, desc, 3);
		bool		allowed = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));

		fn(name, bit, basis, allowed, arg);
	}
	store_end(&session);
}

/*
 * store_scan_subject_states
 *	  Call fn for the state of every subject that has one (subjects NULL),
 *	  or of the given subjects: rows of gdprcrm.subject_state, and erased
 *	  subjects from the tombstones of gdprcrm.subject_keys.  A subject may
 *	  come twice, once from each.  Latest snapshot; read through a cursor,
 *	  so a million subjects do not sit in memory at once.
 */
void
store_scan_subject_states(const int64 *subjects, int count, StateRowFn fn, void *arg)
{
	static const char *const all_sql =
		"SELECT subject, consented, objected, restricted, false FROM " STORE_SCHEMA ".subject_state"
		" UNION ALL"
		" SELECT subject, 0, 0, false, true FROM " STORE_SCHEMA ".subject_keys"
		" WHERE destroyed_at IS NOT NULL";
	static const char *const some_sql =
		"SELECT subject, consented, objected, restricted, false FROM " STORE_SCHEMA ".subject_state"
		" WHERE subject OPERATOR(pg_catalog.=) ANY ($1)"
		" UNION ALL"
		" SELECT subject, 0, 0, false, true FROM " STORE_SCHEMA ".subject_keys"
		" WHERE destroyed_at IS NOT NULL AND subject OPERATOR(pg_catalog.=) ANY ($1)";
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	StoreSession session;
	Portal		portal;

	store_begin(&session);
	/* A read-only cursor runs on the active snapshot: make it the latest. */
	PushActiveSnapshot(read_snapshot());
	if (subjects != NULL)
	{
		Datum	   *elems = palloc(sizeof(Datum) * count);

		for (int i = 0; i < count; i++)
			elems[i] = Int64GetDatum(subjects[i]);
		values[0] = PointerGetDatum(construct_array(elems, count, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		portal = SPI_cursor_open_with_args(NULL, some_sql, 1, types, values, NULL,
										   true, CURSOR_OPT_NO_SCROLL);
	}
	else
		portal = SPI_cursor_open_with_args(NULL, all_sql, 0, NULL, NULL, NULL,
										   true, CURSOR_OPT_NO_SCROLL);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			fn(DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull)),
			   (uint64) DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull)),
			   (uint64) DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull)),
			   DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)),
			   DatumGetBool(SPI_getbinval(row, desc, 5, &isnull)),
			   arg);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	PopActiveSnapshot();
	store_end(&session);
}

/*
 * first_column_int64
 *	  The first column of the last SPI result, a bigint, as an array
 *	  allocated in context (count in *count).
 */
static int64 *
first_column_int64(MemoryContext context, int *count)
{
	int64	   *values = MemoryContextAlloc(context, Max(SPI_processed, 1) * sizeof(int64));

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		values[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	*count = (int) SPI_processed;
	return values;
}

/*
 * store_team_projects
 *	  The projects whose team role belongs to, as a palloc'd array in the
 *	  caller's context (count in *count), unsorted; *members_relid is set
 *	  to the OID of gdprcrm.project_members.  A membership counts only
 *	  while the role it names still has the OID it was bound to.  Latest
 *	  snapshot, read as the tables' owner.
 */
int64 *
store_team_projects(Oid role, int *count, Oid *members_relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(role)};
	StoreSession session;
	MemoryContext caller = CurrentMemoryContext;
	int64	   *projects;

	store_begin(&session);
	*members_relid = get_relname_relid("project_members", get_namespace_oid(STORE_SCHEMA, false));
	if (!OidIsValid(*members_relid) || get_attnum(*members_relid, "member_oid") == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm in this database is older than its library"),
				 errhint("Run ALTER EXTENSION gdprcrm UPDATE.")));
	prepare_once(&team_projects_plan,
				 "SELECT DISTINCT m.project_id FROM " STORE_SCHEMA ".project_members m"
				 " WHERE m.member_oid IS NOT NULL"
				 " AND pg_catalog.pg_get_userbyid(m.member_oid) OPERATOR(pg_catalog.=) m.member"
				 " AND pg_catalog.left(m.member::pg_catalog.text, 3) OPERATOR(pg_catalog.<>) 'pg_'"
				 " AND pg_catalog.pg_has_role($1, m.member_oid, 'MEMBER')",
				 1, types);
	if (SPI_execute_snapshot(team_projects_plan, values, NULL,
							 read_snapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.project_members");
	projects = first_column_int64(caller, count);
	store_end(&session);
	return projects;
}

/*
 * store_all_projects
 *	  Every project id, ascending, palloc'd in the caller's context (count
 *	  in *count).  Latest snapshot, read as the tables' owner.
 */
int64 *
store_all_projects(int *count)
{
	StoreSession session;
	MemoryContext caller = CurrentMemoryContext;
	int64	   *projects;

	store_begin(&session);
	if (SPI_execute_snapshot(prepare_once(&all_projects_plan,
										  "SELECT id FROM " STORE_SCHEMA ".projects ORDER BY id",
										  0, NULL),
							 NULL, NULL, read_snapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read gdprcrm.projects");
	projects = first_column_int64(caller, count);
	store_end(&session);
	return projects;
}

/*
 * store_forget_member
 *	  Delete the memberships of a role being dropped, in this database if
 *	  gdprcrm is installed here; nothing otherwise.  As the tables' owner.
 */
void
store_forget_member(Oid role)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(role)};
	Oid			owner = store_owner_if_installed();
	StoreSession session;
	Oid			relid;

	if (!OidIsValid(owner))
		return;
	/* An older version of the schema has no bound members to forget. */
	relid = get_relname_relid("project_members", get_namespace_oid(STORE_SCHEMA, false));
	if (!OidIsValid(relid) || get_attnum(relid, "member_oid") == InvalidAttrNumber)
		return;
	store_begin_as(&session, owner);
	if (SPI_execute_with_args("DELETE FROM " STORE_SCHEMA ".project_members"
							  " WHERE member_oid OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not update gdprcrm.project_members");
	store_end(&session);
}
