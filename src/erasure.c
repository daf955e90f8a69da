/*-------------------------------------------------------------------------
 * erasure.c
 *	  Erasure in stages, the C side: whether a subject is in the trash, and
 *	  the refusal of writes about a subject in the trash or purged.
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

#include "fmgr.h"
#include "miscadmin.h"

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
