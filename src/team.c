/*-------------------------------------------------------------------------
 * team.c
 *	  Project teams: the tenant filter of every CRM table.
 *
 * A project's team is a list of roles in gdprcrm.project_members; a role
 * reaches a project when it is a member (directly or through other roles)
 * of one of them.  Row level security asks gdprcrm.in_team(project_id) on
 * every row, so each backend keeps the sorted list of projects the current
 * role reaches and answers with a binary search.
 *
 * How a member is identified.  project_members keeps the role's name, the
 * portable identity that survives pg_dump and exists on every node of a
 * cluster, and beside it the OID of the role that had this name when the
 * membership was recorded (or restored: a trigger binds every inserted row
 * by name, so a restore binds to the roles of the new cluster).  A row
 * counts only while a role with exactly that name still has exactly that
 * OID.  Names are compared as they are, never parsed as SQL identifiers:
 * "Alice", alice and "svc.crm" are three different roles.  A role dropped
 * and created again under the same name gets a new OID and inherits no
 * membership in any database; in the database where DROP ROLE runs, its
 * rows are also deleted at once (object access hook below).
 *
 * Invalidation.  The list is rebuilt when the role changes, when
 * project_members changes (its trigger sends a relcache invalidation for
 * the table, delivered at commit to every backend and replayed on
 * standbys), and when any role or role membership changes (syscache
 * callbacks on pg_authid and pg_auth_members).  Each new statement first
 * accepts pending invalidations, so a change committed elsewhere counts
 * from the next statement even inside an open transaction.
 *
 * The team tables (projects, project_members) are read and written here,
 * as their owner.  Which project a subject belongs to is the project_id of
 * the person with its id; a per-subject lookup that must check the team
 * reads it through team.h's TEAM_SUBJECT_PROJECT_SQL.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "int64_order.h"
#include "team.h"

/* Bumped by every invalidation that may change some role's projects. */
static uint64 generation = 1;

static struct
{
	bool		valid;
	Oid			role;
	uint64		generation;
	bool		all;			/* a superuser reaches every project */
	int			count;
	int64	   *projects;		/* sorted, in TopMemoryContext */
}			cached;

static TimestampTz checked_statement = 0;
static Oid	members_relid = InvalidOid;
static object_access_hook_type prev_object_access_hook = NULL;

/*
 * The team tables, gdprcrm.projects and gdprcrm.project_members, read and
 * written as their owner (owner_query.c).
 */
#define MEMBERS_TABLE GDPRCRM_SCHEMA ".project_members"

/* Plans survive across calls; the plan cache re-plans them when needed. */
static SPIPlanPtr team_projects_plan = NULL;
static SPIPlanPtr all_projects_plan = NULL;

/*
 * members_relid_if_current
 *	  The OID of gdprcrm.project_members, or InvalidOid when the installed
 *	  version of gdprcrm is older than the one that binds members to role
 *	  OIDs.
 */
static Oid
members_relid_if_current(void)
{
	Oid			relid = get_relname_relid("project_members",
										  get_namespace_oid(GDPRCRM_SCHEMA, false));

	if (!OidIsValid(relid) || get_attnum(relid, "member_oid") == InvalidAttrNumber)
		return InvalidOid;
	return relid;
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
 * read_team_projects
 *	  The projects whose team role belongs to, as a palloc'd array in the
 *	  caller's context (count in *count), unsorted; also sets members_relid
 *	  for the invalidation callback.  A membership counts only while the
 *	  role it names still has the OID it was bound to.
 */
static int64 *
read_team_projects(Oid role, int *count)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(role)};
	OwnerQuery	query;
	MemoryContext caller = CurrentMemoryContext;
	int64	   *projects;

	owner_query_begin(&query);
	members_relid = members_relid_if_current();
	if (!OidIsValid(members_relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm in this database is older than its library"),
				 errhint("Run ALTER EXTENSION gdprcrm UPDATE.")));
	(void) owner_query_read(owner_query_prepare(&team_projects_plan,
												"SELECT DISTINCT m.project_id FROM " MEMBERS_TABLE " m"
												" WHERE m.member_oid IS NOT NULL"
												" AND pg_catalog.pg_get_userbyid(m.member_oid) OPERATOR(pg_catalog.=) m.member"
												" AND pg_catalog.left(m.member::pg_catalog.text, 3) OPERATOR(pg_catalog.<>) 'pg_'"
												" AND pg_catalog.pg_has_role($1, m.member_oid, 'MEMBER')",
												1, types),
							values, 0, MEMBERS_TABLE);
	projects = first_column_int64(caller, count);
	owner_query_end(&query);
	return projects;
}

/*
 * read_all_projects
 *	  Every project id, ascending, palloc'd in the caller's context (count
 *	  in *count).
 */
static int64 *
read_all_projects(int *count)
{
	OwnerQuery	query;
	MemoryContext caller = CurrentMemoryContext;
	int64	   *projects;

	owner_query_begin(&query);
	(void) owner_query_read(owner_query_prepare(&all_projects_plan,
												"SELECT id FROM " GDPRCRM_SCHEMA ".projects ORDER BY id",
												0, NULL),
							NULL, 0, GDPRCRM_SCHEMA ".projects");
	projects = first_column_int64(caller, count);
	owner_query_end(&query);
	return projects;
}

/*
 * forget_member
 *	  Delete the memberships of a role being dropped, in this database if
 *	  gdprcrm is installed here; nothing otherwise.
 */
static void
forget_member(Oid role)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(role)};
	OwnerQuery	query;

	if (!owner_query_begin_if_installed(&query))
		return;
	/* An older version of the schema has no bound members to forget. */
	if (OidIsValid(members_relid_if_current()) &&
		SPI_execute_with_args("DELETE FROM " MEMBERS_TABLE
							  " WHERE member_oid OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not write %s", MEMBERS_TABLE);
	owner_query_end(&query);
}

static void
rebuild(Oid role)
{
	int64	   *found;
	int			count;

	cached.valid = false;
	if (cached.projects != NULL)
		pfree(cached.projects);
	cached.projects = NULL;
	cached.count = 0;
	cached.role = role;
	cached.generation = generation;
	cached.all = superuser_arg(role);
	if (!cached.all)
	{
		found = read_team_projects(role, &count);
		qsort(found, count, sizeof(int64), int64_order);
		cached.projects = MemoryContextAlloc(TopMemoryContext,
											 Max(count, 1) * sizeof(int64));
		memcpy(cached.projects, found, count * sizeof(int64));
		cached.count = count;
		pfree(found);
	}
	cached.valid = true;
}

/*
 * team_includes
 *	  Whether role reaches project through its team.  Superusers reach
 *	  every project.  May run a query (as the tables' owner) when the
 *	  cached answer is stale; otherwise a binary search.
 */
bool
team_includes(Oid role, int64 project)
{
	TimestampTz statement = GetCurrentStatementStartTimestamp();
	int			lo,
				hi;

	/* A new statement sees what committed before it started. */
	if (statement != checked_statement)
	{
		AcceptInvalidationMessages();
		checked_statement = statement;
	}
	if (!cached.valid || cached.role != role || cached.generation != generation)
		rebuild(role);
	if (cached.all)
		return true;
	lo = 0;
	hi = cached.count - 1;
	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (cached.projects[mid] == project)
			return true;
		if (cached.projects[mid] < project)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/*
 * gdprcrm.in_team(project bigint) -> boolean
 *	  Whether the current role is in the project's team: the tenant filter
 *	  of every CRM table's row level security.
 */
PG_FUNCTION_INFO_V1(gdprcrm_in_team);
Datum
gdprcrm_in_team(PG_FUNCTION_ARGS)
{
	/* No project is nobody's: false, never NULL, so that NOT in_team() holds. */
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(team_includes(GetUserId(), PG_GETARG_INT64(0)));
}

/*
 * calling_user
 *	  The role a gdprcrm SECURITY DEFINER function acts for: the current
 *	  role outside every SECURITY DEFINER function (SET ROLE's, else the
 *	  session's).  Refused during maintenance operations (ANALYZE, VACUUM
 *	  and autovacuum, CREATE INDEX, REINDEX, CLUSTER, REFRESH MATERIALIZED
 *	  VIEW): they run index expressions and the like as the table's owner
 *	  while the session, and so the outer role, is whoever started the
 *	  command, often a superuser; acting for it would lend its teams to
 *	  the table owner's code.
 */
static Oid
calling_user(void)
{
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("gdprcrm cannot act for a caller during a maintenance operation"),
				 errdetail("Index expressions and similar code run during ANALYZE, VACUUM, CREATE INDEX, REINDEX, CLUSTER or REFRESH MATERIALIZED VIEW as a table's owner, not as the session's role.")));
	return GetOuterUserId();
}

/*
 * gdprcrm.caller_in_team(project bigint) -> boolean
 *	  The same for the calling role as seen from inside a SECURITY DEFINER
 *	  function (calling_user above).
 */
PG_FUNCTION_INFO_V1(gdprcrm_caller_in_team);
Datum
gdprcrm_caller_in_team(PG_FUNCTION_ARGS)
{
	Oid			caller = calling_user();

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(team_includes(caller, PG_GETARG_INT64(0)));
}

/*
 * gdprcrm.calling_role() -> name
 *	  The name of the calling role as seen from inside a SECURITY DEFINER
 *	  function (calling_user above), in the caller's memory context.
 */
PG_FUNCTION_INFO_V1(gdprcrm_calling_role);
Datum
gdprcrm_calling_role(PG_FUNCTION_ARGS)
{
	Name		result = (Name) palloc0(NAMEDATALEN);

	namestrcpy(result, GetUserNameFromId(calling_user(), false));
	PG_RETURN_NAME(result);
}

/*
 * gdprcrm.visible_projects() -> bigint[]
 *	  The projects the current role reaches, in ascending order (every
 *	  project for a superuser, read as the tables' owner).
 */
PG_FUNCTION_INFO_V1(gdprcrm_visible_projects);
Datum
gdprcrm_visible_projects(PG_FUNCTION_ARGS)
{
	Datum	   *elems;
	int64	   *all = NULL;
	const int64 *projects;
	int			count;

	(void) team_includes(GetUserId(), 0);
	if (cached.all)
	{
		all = read_all_projects(&count);
		projects = all;
	}
	else
	{
		projects = cached.projects;
		count = cached.count;
	}
	elems = palloc(Max(count, 1) * sizeof(Datum));
	for (int i = 0; i < count; i++)
		elems[i] = Int64GetDatum(projects[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, count, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * gdprcrm.announce_team_change() trigger
 *	  After any change of project_members: every backend rebuilds its list
 *	  (at this transaction's commit; this one at its next command).
 */
PG_FUNCTION_INFO_V1(gdprcrm_announce_team_change);
Datum
gdprcrm_announce_team_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("announce_team_change() must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}

static void
relcache_changed(Datum arg pg_attribute_unused(), Oid relid)
{
	if (relid == InvalidOid || relid == members_relid)
		generation++;
}

static void
roles_changed(Datum arg pg_attribute_unused(), int cacheid pg_attribute_unused(),
			  uint32 hashvalue pg_attribute_unused())
{
	generation++;
}

/* DROP ROLE: forget the role's memberships in this database at once. */
static void
object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == AuthIdRelationId)
		forget_member(objectId);
}

/*
 * team_init
 *	  Register the invalidation callbacks and the DROP ROLE hook.
 */
void
team_init(void)
{
	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, roles_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, roles_changed, (Datum) 0);
	prev_object_access_hook = object_access_hook;
	object_access_hook = object_access;
}
