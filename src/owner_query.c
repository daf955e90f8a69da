/*-------------------------------------------------------------------------
 * owner_query.c
 *	  Queries on gdprcrm's own tables, run as their owner under the latest
 *	  snapshot.
 *
 * No application role has any privilege on the tables the C modules keep
 * (keys, teams, purposes, subject states).  Each module writes the SQL of
 * its own tables and runs it between owner_query_begin and
 * owner_query_end: as the tables' owner, the way a SECURITY DEFINER
 * function would, in a security-restricted operation so that nothing the
 * caller set up (search_path objects, triggers of theirs) runs with that
 * identity.  Every query names its objects and operators with their
 * schema.
 *
 * Reads use the latest snapshot rather than the transaction's: once a key
 * is destroyed or a consent withdrawn and committed, even a REPEATABLE
 * READ transaction that started earlier must not act on the old row.  (In
 * parallel mode PostgreSQL allows no new snapshot, and the statement's own
 * is used.)
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/parallel.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "owner_query.h"

/*
 * installed_owner
 *	  The owner of gdprcrm's tables, or InvalidOid when gdprcrm is not
 *	  installed in this database.  Read from gdprcrm.subject_keys, which
 *	  every version has: CREATE EXTENSION gives all tables one owner.
 */
static Oid
installed_owner(void)
{
	Oid			nsp = get_namespace_oid(GDPRCRM_SCHEMA, true);
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

static void
begin_as(OwnerQuery *query, Oid owner)
{
	GetUserIdAndSecContext(&query->saved_user, &query->saved_context);
	SetUserIdAndSecContext(owner, query->saved_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/*
 * owner_query_begin
 *	  Become the tables' owner and connect to SPI; errors when gdprcrm is
 *	  not installed in this database.  On error, transaction abort restores
 *	  the caller's identity: no PG_TRY is needed around the queries.
 */
void
owner_query_begin(OwnerQuery *query)
{
	Oid			owner = installed_owner();

	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm is not installed in this database"),
				 errhint("Run CREATE EXTENSION gdprcrm.")));
	begin_as(query, owner);
}

/*
 * owner_query_begin_if_installed
 *	  The same, or false and nothing done when gdprcrm is not installed in
 *	  this database (for hooks that run in every database).
 */
bool
owner_query_begin_if_installed(OwnerQuery *query)
{
	Oid			owner = installed_owner();

	if (!OidIsValid(owner))
		return false;
	begin_as(query, owner);
	return true;
}

/*
 * owner_query_end
 *	  Disconnect from SPI (freeing its results) and become the caller again.
 */
void
owner_query_end(OwnerQuery *query)
{
	SPI_finish();
	SetUserIdAndSecContext(query->saved_user, query->saved_context);
}

/*
 * owner_query_prepare
 *	  *plan, prepared from sql on first use and kept for the backend's life
 *	  (the plan cache re-plans it when needed).  Inside owner_query_begin.
 */
SPIPlanPtr
owner_query_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for a gdprcrm query: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * owner_query_snapshot
 *	  The latest snapshot, so that a destroyed key or a withdrawn consent is
 *	  seen at once even by a transaction that started before; in parallel
 *	  mode, where PostgreSQL forbids taking one, the statement's snapshot.
 */
Snapshot
owner_query_snapshot(void)
{
	return IsInParallelMode() ? GetActiveSnapshot() : GetLatestSnapshot();
}

/*
 * owner_query_read
 *	  Run a prepared read-only query with values under owner_query_snapshot,
 *	  returning at most limit rows (0: all) in SPI_tuptable; returns their
 *	  number.  table names what is read, for the error when it fails.
 */
uint64
owner_query_read(SPIPlanPtr plan, Datum *values, long limit, const char *table)
{
	if (SPI_execute_snapshot(plan, values, NULL, owner_query_snapshot(),
							 InvalidSnapshot, true, false, limit) != SPI_OK_SELECT)
		elog(ERROR, "could not read %s", table);
	return SPI_processed;
}

/*
 * owner_query_write
 *	  Run a prepared query that writes, which must return the SPI status
 *	  expected (SPI_OK_INSERT, ...); returns how many rows it processed.
 */
uint64
owner_query_write(SPIPlanPtr plan, Datum *values, int expected, const char *table)
{
	if (SPI_execute_plan(plan, values, NULL, false, 0) != expected)
		elog(ERROR, "could not write %s", table);
	return SPI_processed;
}

/*
 * owner_query_execute
 *	  Prepare *plan from sql once, and run it with values as the tables'
 *	  owner (owner_query_begin to owner_query_end), for a statement that
 *	  writes and of which the caller needs only how many rows it processed,
 *	  which is returned.
 */
uint64
owner_query_execute(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
					Datum *values, int expected, const char *table)
{
	OwnerQuery	query;
	uint64		processed;

	owner_query_begin(&query);
	processed = owner_query_write(owner_query_prepare(plan, sql, nargs, argtypes),
								  values, expected, table);
	owner_query_end(&query);
	return processed;
}
