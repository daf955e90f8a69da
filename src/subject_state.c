/*-------------------------------------------------------------------------
 * subject_state.c
 *	  The state of each data subject, this backend's copy of it, and the
 *	  announcement of its changes to every backend.
 *
 * gdprcrm.subject_state holds, for every subject that has any, one consent
 * bit and one objection bit per purpose, whether processing is restricted
 * (Art. 18), since when the subject is in the trash (and its project), and
 * when it was erased.  The consent and restriction ledgers (SQL) write the
 * first three; the erasure functions (SQL, src/sql/erasure.sql) the trash;
 * shredding a subject's key (subject_keys.c) records the erasure here.  A
 * subject without a row has given no consent, made no objection, and is
 * neither restricted, trashed nor erased.
 *
 * Row filters decide on every row and must not run a query, so each
 * backend keeps a copy of every state in an open-addressing hash table,
 * read through subject_state_get and subject_state_next (consent.c builds
 * its per-purpose decisions from it), or subject_state_current, which
 * catches up first (the key cache and the erasure checks of the write
 * functions ask it whether a subject is in the trash).
 *
 * Invalidation: whatever changes a subject's state calls
 * subject_state_publish() (from SQL, publish_state_change()); when the
 * transaction commits, the subjects are appended to a ring in shared
 * memory and a sequence number advances (shmem.c), and standbys are told
 * through WAL (announce.c).  subject_state_catch_up(), called before each
 * decision, compares the sequence with the last one this backend saw; if
 * it moved, the backend reads the changed subjects from the ring and
 * fetches their state again (all of them when it fell more than a ring
 * behind).  So once a change has committed, every statement that starts
 * afterwards decides on it, and the cost of a change is one indexed fetch
 * per backend that filters.  The subjects changed by the current
 * transaction are fetched again at this backend's next decision, so that
 * it reads its own writes.  Whoever catches up, the subjects read again
 * are kept for consent.c, which learns of them at its next
 * subject_state_catch_up and brings its decisions in line.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "announce.h"
#include "int64_order.h"
#include "owner_query.h"
#include "shmem.h"
#include "subject_hash.h"
#include "subject_state.h"

#define STATE_TABLE GDPRCRM_SCHEMA ".subject_state"

/* What set_state reads of a state, in its order. */
#define STATE_QUERY \
	"SELECT subject, consented, objected, restricted, erased_at IS NOT NULL," \
	" trashed_at IS NOT NULL, COALESCE(project_id, 0)" \
	" FROM " STATE_TABLE

typedef struct StateEntry
{
	SubjectState state;			/* state.subject is the hash key */
	char		status;			/* simplehash's */
} StateEntry;

#define SH_PREFIX statecache
#define SH_ELEMENT_TYPE StateEntry
#define SH_KEY_TYPE int64
#define SH_KEY state.subject
#define SH_HASH_KEY(tb, key) hash_subject(key)
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static MemoryContext state_context = NULL;
static statecache_hash *states = NULL;
static bool loaded = false;
static uint64 seen_seq = 0;

/*
 * The largest subject id that ever had an entry since the last full load:
 * every subject above it has the default state.
 */
static int64 max_state_subject = -1;

/*
 * Subjects changed by the current transaction: published at commit (kept
 * unsorted with duplicates until then), and refreshed in this backend at
 * its next decision, so that it reads its own writes.
 */
static int64 *pending = NULL;
static int	pending_count = 0;
static int	pending_size = 0;
static int	pending_refreshed = 0;	/* pending[0 .. n-1] already refreshed */

/*
 * Subjects read again since consent.c last asked (subject_state_catch_up),
 * or that everything was: a catch-up on behalf of subject_state_current
 * must not hide a change from the decisions built on the copy.  Past
 * MAX_UNREPORTED subjects, the list gives way to "everything".
 */
#define MAX_UNREPORTED 65536
static bool unreported_reload = false;
static int64 *unreported = NULL;
static int	unreported_count = 0;
static int	unreported_size = 0;

static SPIPlanPtr erasure_plan = NULL;

/* Copy one row of the state query into the table, unless it is the default. */
static void
set_state(HeapTuple row, TupleDesc desc)
{
	SubjectState s;
	StateEntry *entry;
	bool		isnull;
	bool		found;

	s.subject = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	s.consented = (uint64) DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
	s.objected = (uint64) DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	s.restricted = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));
	s.erased = DatumGetBool(SPI_getbinval(row, desc, 5, &isnull));
	s.trashed = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
	s.project = DatumGetInt64(SPI_getbinval(row, desc, 7, &isnull));

	/* Changed subjects were deleted first; a default state needs no entry. */
	if (s.consented == 0 && s.objected == 0 && !s.restricted && !s.erased &&
		!s.trashed)
		return;
	entry = statecache_insert(states, s.subject, &found);
	entry->state = s;
	max_state_subject = Max(max_state_subject, s.subject);
}

/*
 * read_states
 *	  Copy into the table the state of every subject that has one (subjects
 *	  NULL), or of the given subjects.  Latest snapshot, as the tables'
 *	  owner; read through a cursor, so a million subjects do not sit in
 *	  memory at once.
 */
static void
read_states(const int64 *subjects, int count)
{
	static const char *const all_sql = STATE_QUERY;
	static const char *const some_sql = STATE_QUERY
		" WHERE subject OPERATOR(pg_catalog.=) ANY ($1)";
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	OwnerQuery	query;
	Portal		portal;

	owner_query_begin(&query);
	/* A read-only cursor runs on the active snapshot: make it the latest. */
	PushActiveSnapshot(owner_query_snapshot());
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
			set_state(SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	PopActiveSnapshot();
	owner_query_end(&query);
}

/* Read every state again. */
static void
full_load(uint64 seq)
{
	if (state_context == NULL)
		state_context = AllocSetContextCreate(TopMemoryContext,
											  "gdprcrm subject states",
											  ALLOCSET_DEFAULT_SIZES);
	if (states == NULL)
		states = statecache_create(state_context, 1024, NULL);
	else
		statecache_reset(states);
	loaded = false;
	max_state_subject = -1;
	unreported_reload = true;
	unreported_count = 0;
	read_states(NULL, 0);
	seen_seq = seq;
	loaded = true;
}

/* Keep subjects read again for consent.c's next subject_state_catch_up. */
static void
note_unreported(const int64 *subjects, int count)
{
	if (unreported_reload)
		return;
	if (unreported_count + count > MAX_UNREPORTED)
	{
		unreported_reload = true;
		unreported_count = 0;
		return;
	}
	if (unreported_count + count > unreported_size)
	{
		int			size = Max(Max(unreported_size * 2, 64), unreported_count + count);

		unreported = unreported == NULL ?
			MemoryContextAlloc(TopMemoryContext, size * sizeof(int64)) :
			repalloc(unreported, size * sizeof(int64));
		unreported_size = size;
	}
	memcpy(unreported + unreported_count, subjects, count * sizeof(int64));
	unreported_count += count;
}

/*
 * refresh
 *	  Fetch again the state of the given subjects, and keep them for
 *	  consent.c (note_unreported).
 */
static void
refresh(const int64 *subjects, int count)
{
	if (count == 0)
		return;
	for (int i = 0; i < count; i++)
		if (subjects[i] != SUBJECT_STATE_PURPOSES)
			statecache_delete(states, subjects[i]);
	read_states(subjects, count);
	note_unreported(subjects, count);
}

/*
 * refresh_published
 *	  Fetch again the subjects published since this backend last looked, up
 *	  to seq.  False when that is not known (it fell more than a ring behind,
 *	  or all subjects were announced at once): then everything must be read.
 */
static bool
refresh_published(uint64 seq)
{
	int			count;
	int64	   *changed = shmem_state_changes(seen_seq, seq, MyDatabaseId, &count);

	if (changed == NULL)
		return false;
	for (int i = 0; i < count; i++)
	{
		if (changed[i] == SHMEM_ALL_SUBJECTS)
		{
			pfree(changed);
			return false;
		}
	}
	refresh(changed, count);
	pfree(changed);
	seen_seq = seq;
	return true;
}

/*
 * catch_up
 *	  Bring this backend's copy up to the last committed change, and to
 *	  this transaction's own changes, noting what was read again for
 *	  consent.c.  Costs a few atomic reads when nothing changed.  The
 *	  sequence is read before anything is fetched, so a change committed
 *	  meanwhile is fetched again next time rather than missed; an error
 *	  part way leaves everything to be read again next time.  Errors
 *	  without shared memory.
 */
static void
catch_up(void)
{
	uint64		seq;

	if (!shmem_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm row filters need gdprcrm to be preloaded"),
				 errdetail("Backends learn of consent changes through shared memory."),
				 errhint("Add gdprcrm to shared_preload_libraries in postgresql.conf and restart the server.")));
	/* On a standby: changes replayed since the last statement. */
	announce_catch_up();
	seq = shmem_state_seq();
	if (loaded && pending_refreshed == pending_count && seq == seen_seq)
		return;

	if (loaded)
	{
		loaded = false;
		if (pending_refreshed < pending_count)
			refresh(pending + pending_refreshed, pending_count - pending_refreshed);
		pending_refreshed = pending_count;
		loaded = seq == seen_seq || refresh_published(seq);
	}
	if (!loaded)
	{
		full_load(seq);
		pending_refreshed = pending_count;
	}
}

/*
 * subject_state_catch_up
 *	  Bring this backend's copy up to date (catch_up), and say in *changes
 *	  what was read again since the last call, by this call or by
 *	  subject_state_current in between (its subjects palloc'd in the
 *	  caller's context).  For consent.c, the one keeper of decisions built
 *	  on the copy.
 */
void
subject_state_catch_up(SubjectStateChanges *changes)
{
	catch_up();
	changes->reloaded = unreported_reload;
	changes->count = 0;
	changes->subjects = NULL;
	if (!unreported_reload && unreported_count > 0)
	{
		changes->subjects = palloc(unreported_count * sizeof(int64));
		memcpy(changes->subjects, unreported, unreported_count * sizeof(int64));
		changes->count = unreported_count;
	}
	unreported_reload = false;
	unreported_count = 0;
}

/*
 * subject_state_current
 *	  subject's state as of the last committed change and this
 *	  transaction's own (NULL for the default state): catches up first, so
 *	  one call costs a few atomic reads and a hash probe when nothing
 *	  changed.  Valid until the next catch-up.  Errors without shared
 *	  memory, like the row filters.
 */
const SubjectState *
subject_state_current(int64 subject)
{
	catch_up();
	return subject_state_get(subject);
}

/*
 * subject_state_get
 *	  This backend's copy of subject's state, or NULL for the default
 *	  state.  Valid until the next subject_state_catch_up.
 */
const SubjectState *
subject_state_get(int64 subject)
{
	StateEntry *entry = states == NULL ? NULL : statecache_lookup(states, subject);

	return entry == NULL ? NULL : &entry->state;
}

/*
 * subject_state_next
 *	  Iterate over every state in this backend's copy, in no particular
 *	  order: start with *position 0, and stop at NULL.  Valid until the next
 *	  subject_state_catch_up.
 */
const SubjectState *
subject_state_next(uint32 *position)
{
	while (states != NULL && *position < states->size)
	{
		StateEntry *entry = &states->data[(*position)++];

		if (entry->status == statecache_SH_IN_USE)
			return &entry->state;
	}
	return NULL;
}

/*
 * subject_state_count
 *	  How many subjects have a state in this backend's copy.
 */
uint32
subject_state_count(void)
{
	return states == NULL ? 0 : states->members;
}

/*
 * subject_state_max_subject
 *	  A subject id at or above every subject with a state in this backend's
 *	  copy (-1 when there is none): the largest since the last full load.
 */
int64
subject_state_max_subject(void)
{
	return max_state_subject;
}

/*
 * subject_state_publish
 *	  Remember that the current transaction changed subject's state
 *	  (SUBJECT_STATE_PURPOSES: the purposes), to be refreshed by this
 *	  backend at its next decision and announced to every backend when the
 *	  transaction commits.
 */
void
subject_state_publish(int64 subject)
{
	/*
	 * A subject changed twice in a row needs one entry, unless the first
	 * was already read: then the second change must be read too.
	 */
	if (pending_count > pending_refreshed && pending[pending_count - 1] == subject)
		return;
	if (pending_count == pending_size)
	{
		pending_size = pending_size == 0 ? 64 : pending_size * 2;
		pending = pending == NULL ?
			MemoryContextAlloc(TopMemoryContext, pending_size * sizeof(int64)) :
			repalloc(pending, pending_size * sizeof(int64));
	}
	pending[pending_count++] = subject;
}

/*
 * gdprcrm.publish_state_change(subject bigint)
 *	  SQL face of subject_state_publish for the ledger functions.
 */
PG_FUNCTION_INFO_V1(gdprcrm_publish_state_change);
Datum
gdprcrm_publish_state_change(PG_FUNCTION_ARGS)
{
	subject_state_publish(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/*
 * subject_state_record_erasure
 *	  Record that subject is erased, creating its state row if it has none,
 *	  and publish the change: once this transaction commits, row filters
 *	  everywhere hide the subject.  The first erasure's time is kept.  Takes
 *	  the subject's state row lock, which every change of a subject's state
 *	  takes (the ledgers' lock_subject_state), until the transaction ends.
 */
void
subject_state_record_erasure(int64 subject)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subject)};

	/*
	 * One statement, so that a concurrent first state row of the subject
	 * is waited for, not missed.  An erased subject's row is left as it is
	 * (but locked all the same).
	 */
	(void) owner_query_execute(&erasure_plan,
							   "INSERT INTO " STATE_TABLE " AS s (subject, erased_at)"
							   " VALUES ($1, pg_catalog.now())"
							   " ON CONFLICT (subject) DO UPDATE"
							   " SET erased_at = pg_catalog.now(), updated_at = pg_catalog.now()"
							   " WHERE s.erased_at IS NULL",
							   1, types, values, SPI_OK_INSERT, STATE_TABLE);
	subject_state_publish(subject);
}

/* Sort the pending subjects and drop duplicates. */
static void
dedupe_pending(void)
{
	int			n = 1;

	if (pending_count <= 1)
		return;
	qsort(pending, pending_count, sizeof(int64), int64_order);
	for (int i = 1; i < pending_count; i++)
		if (pending[i] != pending[n - 1])
			pending[n++] = pending[i];
	pending_count = n;
	pending_refreshed = 0;
}

static void
xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* Standbys hear of the changes through WAL, before the commit. */
			if (pending_count > 0)
			{
				dedupe_pending();
				announce_before_commit(pending, pending_count);
			}
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending_count > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed consent or restrictions")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (pending_count > 0)
			{
				dedupe_pending();
				shmem_publish_state_changes(pending, pending_count, MyDatabaseId);
			}
			pending_count = pending_refreshed = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:

			/*
			 * This backend may have read its own changes, now undone: start
			 * over from the committed state at its next decision.
			 */
			if (pending_count > 0)
				loaded = false;
			pending_count = pending_refreshed = 0;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction that rolls back (ROLLBACK TO SAVEPOINT, a PL/pgSQL
 * exception block) undoes its writes to the ledgers and subject_state, but
 * this backend may already have read them into its copy.  So each
 * subtransaction remembers how many subjects were pending when it started,
 * and its abort makes every subject published since then be read again at
 * the next decision, when the rolled-back rows are invisible.  Those
 * subjects stay pending and are announced at commit even though their
 * change was undone: a needless refresh elsewhere costs one indexed fetch,
 * a missed one would show a hidden row.
 */
static int *pending_at_level = NULL;	/* by transaction nesting level */
static int	pending_levels = 0;

static void
subxact_callback(SubXactEvent event,
				 SubTransactionId mySubid pg_attribute_unused(),
				 SubTransactionId parentSubid pg_attribute_unused(),
				 void *arg pg_attribute_unused())
{
	int			level = GetCurrentTransactionNestLevel();

	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			if (level >= pending_levels)
			{
				int			size = Max(level + 1, pending_levels * 2);

				pending_at_level = pending_at_level == NULL ?
					MemoryContextAllocZero(TopMemoryContext, size * sizeof(int)) :
					repalloc(pending_at_level, size * sizeof(int));
				memset(pending_at_level + pending_levels, 0,
					   (size - pending_levels) * sizeof(int));
				pending_levels = size;
			}
			pending_at_level[level] = pending_count;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			{
				/*
				 * subject_state_publish may have folded a change made here
				 * into the entry just before the subtransaction, if that
				 * entry was not read yet then (it may have been since): read
				 * it again too.  Unknown start (0): everything pending.
				 */
				int			start = level < pending_levels ? pending_at_level[level] : 0;

				pending_refreshed = Min(pending_refreshed, Max(start - 1, 0));
			}
			break;
		default:
			break;
	}
}

/*
 * subject_state_init
 *	  Register the transaction callbacks that publish changes and undo
 *	  this backend's reading of changes rolled back.
 */
void
subject_state_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
