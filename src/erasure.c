/*-------------------------------------------------------------------------
 * erasure.c
 *	  Erasure in stages, the C side: whether a subject is in the trash, the
 *	  refusal of writes about a subject in the trash or purged, and the
 *	  purge's statements on registered tables, run as each table's owner.
 *
 * The stages themselves (trash, restore, purge, legal hold, suppression)
 * are SQL, in src/sql/erasure.sql: they run once per request and write
 * gdprcrm.subject_state, whose announcement reaches every backend
 * (subject_state.c).  What runs on every call of identify(), track() and
 * the other write functions must not cost a query, so it is answered here
 * from this backend's copy of the subjects' states, brought up to date
 * first (subject_state_current): a trash, restore or purge committed
 * anywhere counts from the next call on.  The row filter (consent.c) and
 * the key cache (subject_keys.c) read the same copy.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "subject_state.h"
#include "team.h"

/*
 * gdprcrm.in_trash(subject bigint) -> boolean
 *	  Whether subject is in the trash, or was purged from it: for
 *	  identify() and import_people(), which leave such a person alone.
 *	  Not executable by PUBLIC: it would tell anyone whether any subject id
 *	  was erased.
 */
PG_FUNCTION_INFO_V1(gdprcrm_in_trash);
Datum
gdprcrm_in_trash(PG_FUNCTION_ARGS)
{
	const SubjectState *state = subject_state_current(PG_GETARG_INT64(0));

	PG_RETURN_BOOL(state != NULL && state->trashed);
}

/*
 * gdprcrm.require_not_erased(project bigint, subject bigint) -> void
 *	  Refuse a write about subject, a person of project, when it is in the
 *	  trash (SQLSTATE 55000) or was purged (22023, as the consent ledger
 *	  refuses an erased subject).  Answers only about a subject of the
 *	  given project whose team includes the current role (superusers reach
 *	  every project): for any other subject it returns, and the write then
 *	  fails as it would have (the team filter, the foreign key to people),
 *	  so that it says nothing about other projects' subjects.
 */
PG_FUNCTION_INFO_V1(gdprcrm_require_not_erased);
Datum
gdprcrm_require_not_erased(PG_FUNCTION_ARGS)
{
	int64		project = PG_GETARG_INT64(0);
	const SubjectState *state = subject_state_current(PG_GETARG_INT64(1));

	if (state == NULL || !state->trashed || state->project != project)
		PG_RETURN_VOID();
	if (!superuser() && !team_includes(GetUserId(), project))
		PG_RETURN_VOID();
	if (state->erased)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the subject was erased"),
				 errdetail("The subject was purged: nothing more is recorded about it.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the subject is in the trash"),
			 errdetail("Nothing is recorded about a subject erased to the trash."),
			 errhint("Restore it with gdprcrm.restore_subject() to record data about it again.")));
	PG_RETURN_VOID();
}

/*
 * gdprcrm.purge_rows(tab regclass, statement text, subjects bigint[]) -> bigint
 *	  Run statement, the DELETE or UPDATE of tab's rows of subjects ($1)
 *	  that purge_subject() wrote, as tab's owner, and return how many rows
 *	  it processed.  purge_subject() runs as the extension's owner, a
 *	  superuser: run as that, the statement would fire the triggers and
 *	  rules of an application's table, and evaluate the functions of its
 *	  checks, generated columns and index expressions, with superuser
 *	  rights, so that whoever owns a registered table could become a
 *	  superuser at the next purge.  As its owner, in a security-restricted
 *	  operation, they get no more than the owner has, as for a foreign key
 *	  action or REFRESH MATERIALIZED VIEW.  Row security is not forced on
 *	  the owner here (SECURITY_NOFORCE_RLS, as for foreign key checks): the
 *	  purpose filter hides a subject in the trash, and the purge must reach
 *	  every row of it.  On error, transaction abort restores the caller's
 *	  identity and settings.  Not executable by PUBLIC: it runs any
 *	  statement as any table's owner.
 */
PG_FUNCTION_INFO_V1(gdprcrm_purge_rows);
Datum
gdprcrm_purge_rows(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *statement = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1] = {PG_GETARG_DATUM(2)};
	HeapTuple	tuple;
	Oid			owner;
	Oid			saved_user;
	int			saved_context;
	int			nestlevel;
	int			rc;
	uint64		processed;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("a registered table no longer exists")));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	GetUserIdAndSecContext(&saved_user, &saved_context);
	SetUserIdAndSecContext(owner, saved_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION |
						   SECURITY_NOFORCE_RLS);
	nestlevel = NewGUCNestLevel();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(statement, 1, types, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE && rc != SPI_OK_UPDATE)
		elog(ERROR, "unexpected result of a purge statement: %s",
			 SPI_result_code_string(rc));
	processed = SPI_processed;
	SPI_finish();
	AtEOXact_GUC(false, nestlevel);
	SetUserIdAndSecContext(saved_user, saved_context);

	PG_RETURN_INT64((int64) processed);
}
