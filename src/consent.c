/*-------------------------------------------------------------------------
 * consent.c
 *	  The purpose-checking row filter: gdprcrm.lawful(subject).
 *
 * Row level security calls lawful() once per row, so it must not run a
 * query.  Each backend keeps a copy of the state of every subject that has
 * any (gdprcrm.subject_state: one consent bit and one objection bit per
 * purpose, restriction; erasure from gdprcrm.subject_keys tombstones) in
 * an open-addressing hash table, and the purposes by name.  A subject
 * without an entry has given no consent, made no objection, and is
 * neither restricted nor erased.
 *
 * Per row, the decision for the declared purpose is one bit test: person
 * ids are dense sequence values, so each purpose in use has a bitmap of its
 * decision indexed by subject id, built from the hash table when first
 * needed and grown on demand (subjects beyond MAX_BITMAP_SUBJECTS, or
 * negative, are decided from the hash table).
 *
 * Invalidation: the ledger functions (and shred_subject_key) call
 * consent_publish() for each subject they change; when the transaction
 * commits, the subjects are appended to a ring in shared memory and a
 * sequence number advances.  Before each decision, lawful() compares the
 * sequence with the last one this backend saw; if it moved, the backend
 * reads the changed subjects from the ring and fetches their state again
 * (a full reload when it fell more than a ring behind).  So once a change
 * has committed, every statement that starts afterwards decides on it,
 * and the cost of a change is one indexed fetch per backend that filters.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "announce.h"
#include "consent.h"
#include "guc.h"
#include "int64_order.h"
#include "shmem.h"
#include "store.h"
#include "subject_hash.h"

typedef enum LawfulBasis
{
	BASIS_CONSENT,
	BASIS_CONTRACT,
	BASIS_LEGAL_OBLIGATION,
	BASIS_VITAL_INTERESTS,
	BASIS_PUBLIC_TASK,
	BASIS_LEGITIMATE_INTERESTS
} LawfulBasis;

typedef struct Purpose
{
	char		name[NAMEDATALEN];
	uint64		mask;			/* 1 << its bit */
	LawfulBasis basis;
	bool		allowed_when_restricted;
} Purpose;

/* Decision bitmap of one purpose: bit s set when lawful for subject s. */
typedef struct DecisionBits
{
	uint64	   *words;			/* NULL until built */
	uint64		subjects;		/* covers subjects 0 .. subjects - 1 */
} DecisionBits;

/* 256M subjects: 32 MB per purpose at most. */
#define MAX_BITMAP_SUBJECTS (UINT64CONST(1) << 28)
#define MIN_BITMAP_SUBJECTS (UINT64CONST(1) << 16)

/*
 * A bitmap is built only while it is dense enough: at most this many bits
 * per subject with a state, so that its memory (one bit per id up to the
 * largest) stays within a small multiple of the hash table's (about 40
 * bytes per subject) however far apart the ids are.  Ids are sequence
 * values and dense in practice; anyone who can draw from the sequence
 * could spread them, so a sparse set is decided from the hash table.
 */
#define MAX_BITS_PER_STATE 256

typedef struct StateEntry
{
	int64		subject;		/* hash key */
	uint64		consented;
	uint64		objected;
	bool		restricted;
	bool		erased;
	char		status;			/* simplehash's */
} StateEntry;

#define SH_PREFIX statecache
#define SH_ELEMENT_TYPE StateEntry
#define SH_KEY_TYPE int64
#define SH_KEY subject
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
 * every subject above it has the default state, so the bitmaps never need
 * to reach past it, whatever subject id a caller asks about.
 */
static int64 max_state_subject = -1;

static Purpose *purposes = NULL;
static int	purpose_count = 0;
static DecisionBits bits[64];	/* by index into purposes */

/* The purpose last resolved from gdprcrm.purpose (resolved may be NULL). */
static bool resolved_valid = false;
static uint64 resolved_generation = 0;
static const Purpose *resolved = NULL;

/*
 * Subjects changed by the current transaction: published at commit (kept
 * unsorted with duplicates until then), and refreshed in this backend at
 * its next decision, so that it reads its own writes.
 */
static int64 *pending = NULL;
static int	pending_count = 0;
static int	pending_size = 0;
static int	pending_refreshed = 0;	/* pending[0 .. n-1] already refreshed */

static bool decide(const Purpose *p, const StateEntry *s);

static void
forget_bitmaps(void)
{
	for (int i = 0; i < 64; i++)
	{
		if (bits[i].words != NULL)
			pfree(bits[i].words);
		bits[i].words = NULL;
		bits[i].subjects = 0;
	}
}

/*
 * build_bitmap
 *	  (Re)build purpose i's bitmap to cover at least subject want: every
 *	  bit the default decision, then each subject with a state decided.
 */
static void
build_bitmap(int i, uint64 want)
{
	const Purpose *p = &purposes[i];
	DecisionBits *b = &bits[i];
	uint64		subjects = Max(b->subjects, MIN_BITMAP_SUBJECTS);
	statecache_iterator it;
	StateEntry *e;

	while (subjects <= want)
		subjects *= 2;
	subjects = Min(subjects, MAX_BITMAP_SUBJECTS);
	if (b->words != NULL)
		pfree(b->words);
	b->words = MemoryContextAllocHuge(state_context, subjects / 8);
	memset(b->words, decide(p, NULL) ? 0xff : 0x00, subjects / 8);
	b->subjects = subjects;

	statecache_start_iterate(states, &it);
	while ((e = statecache_iterate(states, &it)) != NULL)
	{
		if (e->subject >= 0 && (uint64) e->subject < subjects)
		{
			uint64		mask = UINT64CONST(1) << (e->subject % 64);

			if (decide(p, e))
				b->words[e->subject / 64] |= mask;
			else
				b->words[e->subject / 64] &= ~mask;
		}
	}
}

/* Bring every built bitmap in line with one subject's (new) state. */
static void
update_bitmaps(int64 subject)
{
	const StateEntry *e;

	if (subject < 0)
		return;
	e = statecache_lookup(states, subject);
	for (int i = 0; i < purpose_count; i++)
	{
		DecisionBits *b = &bits[i];

		/*
		 * A subject beyond the bitmap: drop it, and let the next decision
		 * build a larger one if that is still dense enough.
		 */
		if (b->words != NULL && (uint64) subject >= b->subjects)
		{
			pfree(b->words);
			b->words = NULL;
			b->subjects = 0;
		}
		else if (b->words != NULL)
		{
			uint64		mask = UINT64CONST(1) << (subject % 64);

			if (decide(&purposes[i], e))
				b->words[subject / 64] |= mask;
			else
				b->words[subject / 64] &= ~mask;
		}
	}
}

static LawfulBasis
parse_basis(const char *basis)
{
	if (strcmp(basis, "consent") == 0)
		return BASIS_CONSENT;
	if (strcmp(basis, "contract") == 0)
		return BASIS_CONTRACT;
	if (strcmp(basis, "legal_obligation") == 0)
		return BASIS_LEGAL_OBLIGATION;
	if (strcmp(basis, "vital_interests") == 0)
		return BASIS_VITAL_INTERESTS;
	if (strcmp(basis, "public_task") == 0)
		return BASIS_PUBLIC_TASK;
	if (strcmp(basis, "legitimate_interests") == 0)
		return BASIS_LEGITIMATE_INTERESTS;
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("gdprcrm.purposes holds an unknown lawful basis")));
	return BASIS_CONSENT;
}

/* store_scan_purposes callback. */
static void
add_purpose(const char *name, int bit, const char *basis, bool allowed_when_restricted,
			void *arg)
{
	Purpose    *p = &purposes[purpose_count++];

	(void) arg;
	strlcpy(p->name, name, sizeof(p->name));
	p->mask = UINT64CONST(1) << bit;
	p->basis = parse_basis(basis);
	p->allowed_when_restricted = allowed_when_restricted;
}

static void
load_purposes(void)
{
	if (purposes == NULL)
		purposes = MemoryContextAlloc(state_context, 64 * sizeof(Purpose));
	forget_bitmaps();
	purpose_count = 0;
	resolved_valid = false;
	resolved = NULL;
	store_scan_purposes(add_purpose, NULL);
}

/* store_scan_subject_states callback: one subject's state, or its absence. */
static void
set_state(int64 subject, uint64 consented, uint64 objected, bool restricted,
		  bool erased, void *arg)
{
	StateEntry *entry;
	bool		found;

	(void) arg;
	/* Changed subjects were deleted first; a default state needs no entry. */
	if (consented == 0 && objected == 0 && !restricted && !erased)
		return;
	entry = statecache_insert(states, subject, &found);
	max_state_subject = Max(max_state_subject, subject);
	if (found)
	{
		/* A subject can come from two sources (state, tombstone): merge. */
		entry->consented |= consented;
		entry->objected |= objected;
		entry->restricted |= restricted;
		entry->erased |= erased;
	}
	else
	{
		entry->consented = consented;
		entry->objected = objected;
		entry->restricted = restricted;
		entry->erased = erased;
	}
}

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
	load_purposes();
	store_scan_subject_states(NULL, 0, set_state, NULL);
	seen_seq = seq;
	loaded = true;
}

/*
 * refresh_subjects
 *	  Fetch again the state of the given subjects (0: the purposes) and
 *	  bring the decision bitmaps in line.
 */
static void
refresh_subjects(const int64 *subjects, int count)
{
	bool		purposes_changed = false;

	for (int i = 0; i < count; i++)
	{
		if (subjects[i] == 0)
			purposes_changed = true;
		else
			statecache_delete(states, subjects[i]);
	}
	if (purposes_changed)
		load_purposes();
	if (count > 0)
		store_scan_subject_states(subjects, count, set_state, NULL);
	for (int i = 0; i < count; i++)
		update_bitmaps(subjects[i]);
}

/*
 * catch_up
 *	  Bring this backend's copy up to the last committed change, and to
 *	  this transaction's own changes.  The
 *	  sequence is read before anything is fetched, so a change committed
 *	  meanwhile is fetched again next time rather than missed.
 */
static void
catch_up(void)
{
	uint64		seq;
	int64	   *changed;
	int			count;

	if (!shmem_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm row filters need gdprcrm to be preloaded"),
				 errdetail("Backends learn of consent changes through shared memory."),
				 errhint("Add gdprcrm to shared_preload_libraries in postgresql.conf and restart the server.")));
	/* On a standby: changes replayed since the last statement. */
	announce_catch_up();
	seq = shmem_state_seq();
	if (loaded && pending_refreshed < pending_count)
		refresh_subjects(pending + pending_refreshed, pending_count - pending_refreshed);
	pending_refreshed = pending_count;
	if (loaded && seq == seen_seq)
		return;
	if (!loaded)
	{
		full_load(seq);
		return;
	}

	changed = shmem_state_changes(seen_seq, seq, MyDatabaseId, &count);
	for (int i = 0; changed != NULL && i < count; i++)
	{
		if (changed[i] == SHMEM_ALL_SUBJECTS)
		{
			pfree(changed);
			changed = NULL;
		}
	}
	if (changed == NULL)
	{
		/* Fell more than a ring behind, or told all changed: start over. */
		full_load(seq);
		return;
	}
	refresh_subjects(changed, count);
	pfree(changed);
	seen_seq = seq;
}

/*
 * current_purpose
 *	  The declared purpose (gdprcrm.purpose), or NULL when none is declared
 *	  or it is not defined.  Resolved again only when the setting was
 *	  assigned since (gdprcrm_purpose_generation) or the purposes changed.
 */
static const Purpose *
current_purpose(void)
{
	const char *name = gdprcrm_purpose;

	if (name == NULL || name[0] == '\0')
		return NULL;
	if (resolved_valid && resolved_generation == gdprcrm_purpose_generation)
		return resolved;
	resolved = NULL;
	for (int i = 0; i < purpose_count; i++)
		if (strcmp(purposes[i].name, name) == 0)
			resolved = &purposes[i];
	resolved_generation = gdprcrm_purpose_generation;
	resolved_valid = true;
	return resolved;
}

/*
 * decide
 *	  The rule of the filter.  Objections (Art. 21) count against purposes
 *	  based on consent, legitimate interests or a public task; contract,
 *	  legal obligation and vital interests are lawful whatever the
 *	  subject objects to, but not under restriction (Art. 18) unless the
 *	  purpose is allowed under it.
 */
static bool
decide(const Purpose *p, const StateEntry *s)
{
	if (s == NULL)
		return p->basis != BASIS_CONSENT;
	if (s->erased)
		return false;
	if (s->restricted && !p->allowed_when_restricted)
		return false;
	switch (p->basis)
	{
		case BASIS_CONSENT:
			return (s->consented & p->mask) != 0 && (s->objected & p->mask) == 0;
		case BASIS_LEGITIMATE_INTERESTS:
		case BASIS_PUBLIC_TASK:
			return (s->objected & p->mask) == 0;
		case BASIS_CONTRACT:
		case BASIS_LEGAL_OBLIGATION:
		case BASIS_VITAL_INTERESTS:
			return true;
	}
	return false;
}

/*
 * gdprcrm.lawful(subject bigint) -> boolean
 *	  Whether the declared purpose is lawful for subject now: the row filter
 *	  of every protected table.  False without a declared purpose.
 */
PG_FUNCTION_INFO_V1(gdprcrm_lawful);
Datum
gdprcrm_lawful(PG_FUNCTION_ARGS)
{
	int64		subject = PG_GETARG_INT64(0);
	const Purpose *p;

	DecisionBits *b;

	if (gdprcrm_purpose == NULL || gdprcrm_purpose[0] == '\0')
		PG_RETURN_BOOL(false);
	catch_up();
	p = current_purpose();
	if (p == NULL)
		PG_RETURN_BOOL(false);

	/* Above every subject with a state: the default decision. */
	if (subject > max_state_subject)
		PG_RETURN_BOOL(decide(p, NULL));

	/*
	 * The bitmap is sized by the subjects that have a state, never by the
	 * argument: it reaches max_state_subject at most, and only while dense.
	 */
	b = &bits[p - purposes];
	if (subject >= 0 && (uint64) subject < MAX_BITMAP_SUBJECTS &&
		((uint64) max_state_subject < MIN_BITMAP_SUBJECTS ||
		 (uint64) max_state_subject / MAX_BITS_PER_STATE <= states->members))
	{
		if (b->words == NULL || (uint64) subject >= b->subjects)
			build_bitmap(p - purposes, (uint64) max_state_subject);
		PG_RETURN_BOOL((b->words[subject / 64] >> (subject % 64)) & 1);
	}
	PG_RETURN_BOOL(decide(p, statecache_lookup(states, subject)));
}

/*
 * consent_publish
 *	  Remember that the current transaction changed subject's state (0: the
 *	  purposes), to be refreshed by this backend at its next decision and
 *	  announced to every backend when the transaction commits.
 */
void
consent_publish(int64 subject)
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
 *	  SQL face of consent_publish for the ledger functions.
 */
PG_FUNCTION_INFO_V1(gdprcrm_publish_state_change);
Datum
gdprcrm_publish_state_change(PG_FUNCTION_ARGS)
{
	consent_publish(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
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
				 * consent_publish may have folded a change made here into
				 * the entry just before the subtransaction, if that entry
				 * was not read yet then (it may have been since): read it
				 * again too.  Unknown start (0): everything pending.
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
 * consent_init
 *	  Register the transaction callbacks that publish changes and undo
 *	  this backend's reading of changes rolled back.
 */
void
consent_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
