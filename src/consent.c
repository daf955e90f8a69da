/*-------------------------------------------------------------------------
 * consent.c
 *	  The purpose-checking row filter: gdprcrm.lawful(subject).
 *
 * Whether the declared purpose (gdprcrm.purpose) may process a subject's
 * rows follows from the purpose (gdprcrm.purposes: its lawful basis, its
 * bit, whether it is allowed under restriction) and the subject's state:
 * consent, objections, restriction, trash, erasure (subject_state.c, which keeps
 * this backend's copy of every state up to date).  This module keeps the
 * purposes by name and decides.
 *
 * Row level security calls lawful() once per row, so it must not run a
 * query.  Per row, the decision for the declared purpose is one bit test:
 * person ids are dense sequence values, so each purpose in use has a
 * bitmap of its decision indexed by subject id, built from the states
 * when first needed and grown on demand (subjects beyond
 * MAX_BITMAP_SUBJECTS, or negative, are decided from the state itself).
 * Before each decision, lawful() has subject_state catch up with the
 * changes committed since (and the transaction's own), and brings the
 * bitmaps in line with the subjects it read again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/memutils.h"

#include "guc.h"
#include "owner_query.h"
#include "subject_state.h"

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
 * largest) stays within a small multiple of the copy of the states' (about
 * 40 bytes per subject, subject_state.c) however far apart the ids are.
 * Ids are sequence values and dense in practice; anyone who can draw from
 * the sequence could spread them, so a sparse set is decided from the
 * states themselves.
 */
#define MAX_BITS_PER_STATE 256

static MemoryContext consent_context = NULL;
static bool purposes_loaded = false;
static Purpose *purposes = NULL;
static int	purpose_count = 0;
static DecisionBits bits[64];	/* by index into purposes */

/* The purpose last resolved from gdprcrm.purpose (resolved may be NULL). */
static bool resolved_valid = false;
static uint64 resolved_generation = 0;
static const Purpose *resolved = NULL;

static bool decide(const Purpose *p, const SubjectState *s);

/* Plans survive across calls; the plan cache re-plans them when needed. */
static SPIPlanPtr purposes_plan = NULL;

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

/* Set or clear subject's bit in a built bitmap. */
static inline void
set_decision(DecisionBits *b, int64 subject, bool lawful)
{
	uint64		mask = UINT64CONST(1) << (subject % 64);

	if (lawful)
		b->words[subject / 64] |= mask;
	else
		b->words[subject / 64] &= ~mask;
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
	uint32		position = 0;
	const SubjectState *s;

	while (subjects <= want)
		subjects *= 2;
	subjects = Min(subjects, MAX_BITMAP_SUBJECTS);
	if (b->words != NULL)
		pfree(b->words);
	/* Nothing is built until the allocation succeeds. */
	b->words = NULL;
	b->subjects = 0;
	b->words = MemoryContextAllocHuge(consent_context, subjects / 8);
	memset(b->words, decide(p, NULL) ? 0xff : 0x00, subjects / 8);
	b->subjects = subjects;

	while ((s = subject_state_next(&position)) != NULL)
		if (s->subject >= 0 && (uint64) s->subject < subjects)
			set_decision(b, s->subject, decide(p, s));
}

/* Bring every built bitmap in line with one subject's (new) state. */
static void
update_bitmaps(int64 subject)
{
	const SubjectState *s;

	if (subject < 0)
		return;
	s = subject_state_get(subject);
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
			set_decision(b, subject, decide(&purposes[i], s));
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

/*
 * load_purposes
 *	  Read gdprcrm.purposes (latest snapshot, as the tables' owner) and
 *	  forget every decision made under the previous ones.
 */
static void
load_purposes(void)
{
	OwnerQuery	query;

	if (consent_context == NULL)
		consent_context = AllocSetContextCreate(TopMemoryContext,
												"gdprcrm consent decisions",
												ALLOCSET_DEFAULT_SIZES);
	if (purposes == NULL)
		purposes = MemoryContextAlloc(consent_context, 64 * sizeof(Purpose));
	purposes_loaded = false;
	forget_bitmaps();
	purpose_count = 0;
	resolved_valid = false;
	resolved = NULL;

	owner_query_begin(&query);
	(void) owner_query_read(owner_query_prepare(&purposes_plan,
												"SELECT name, bit, lawful_basis, allowed_when_restricted"
												" FROM " GDPRCRM_SCHEMA ".purposes",
												0, NULL),
							NULL, 0, GDPRCRM_SCHEMA ".purposes");
	for (uint64 i = 0; i < SPI_processed && i < 64; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Purpose    *p = &purposes[purpose_count];
		bool		isnull;

		strlcpy(p->name, SPI_getvalue(row, desc, 1), sizeof(p->name));
		p->mask = UINT64CONST(1) << DatumGetInt16(SPI_getbinval(row, desc, 2, &isnull));
		p->basis = parse_basis(SPI_getvalue(row, desc, 3));
		p->allowed_when_restricted = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));
		purpose_count++;
	}
	owner_query_end(&query);
	purposes_loaded = true;
}

/*
 * catch_up
 *	  Bring the subjects' states (subject_state_catch_up) and, with them,
 *	  the purposes and every built bitmap up to date.
 */
static void
catch_up(void)
{
	SubjectStateChanges changes;

	subject_state_catch_up(&changes);
	if (changes.reloaded)
		purposes_loaded = false;
	for (int i = 0; i < changes.count; i++)
		if (changes.subjects[i] == SUBJECT_STATE_PURPOSES)
			purposes_loaded = false;
	if (!purposes_loaded)
		load_purposes();		/* also forgets the bitmaps */
	else
		for (int i = 0; i < changes.count; i++)
			update_bitmaps(changes.subjects[i]);
	if (changes.subjects != NULL)
		pfree(changes.subjects);
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
 *	  The rule of the filter.  A subject in the trash or erased is lawful
 *	  for no purpose.  Objections (Art. 21) count against purposes based on
 *	  consent, legitimate interests or a public task; contract, legal
 *	  obligation and vital interests are lawful whatever the subject
 *	  objects to, but not under restriction (Art. 18) unless the purpose is
 *	  allowed under it.
 */
static bool
decide(const Purpose *p, const SubjectState *s)
{
	if (s == NULL)
		return p->basis != BASIS_CONSENT;
	if (s->erased || s->trashed)
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

	int64		max_subject;
	DecisionBits *b;

	if (gdprcrm_purpose == NULL || gdprcrm_purpose[0] == '\0')
		PG_RETURN_BOOL(false);
	catch_up();
	p = current_purpose();
	if (p == NULL)
		PG_RETURN_BOOL(false);

	/* Above every subject with a state: the default decision. */
	max_subject = subject_state_max_subject();
	if (subject > max_subject)
		PG_RETURN_BOOL(decide(p, NULL));

	/*
	 * The bitmap is sized by the subjects that have a state, never by the
	 * argument: it reaches max_subject at most, and only while dense.
	 */
	b = &bits[p - purposes];
	if (subject >= 0 && (uint64) subject < MAX_BITMAP_SUBJECTS &&
		((uint64) max_subject < MIN_BITMAP_SUBJECTS ||
		 (uint64) max_subject / MAX_BITS_PER_STATE <= subject_state_count()))
	{
		if (b->words == NULL || (uint64) subject >= b->subjects)
			build_bitmap(p - purposes, (uint64) max_subject);
		PG_RETURN_BOOL((b->words[subject / 64] >> (subject % 64)) & 1);
	}
	PG_RETURN_BOOL(decide(p, subject_state_get(subject)));
}
