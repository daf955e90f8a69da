/*-------------------------------------------------------------------------
 * subject_keys.c
 *	  Per-subject data keys, their backend cache, and crypto-shredding.
 *
 * Every data subject has one random 256-bit data key, created on first
 * use and stored only wrapped (keyring_wrap under the wrapping purpose
 * key) in gdprcrm.subject_keys.  Destroying it replaces the wrapped key by
 * a tombstone: every value of that subject, wherever a copy of it lives,
 * can no longer be decrypted.  Shredding also records the erasure in the
 * subject's state (subject_state.c), which is what row filters read;
 * this module knows nothing of how they decide.  Root key rotation wraps
 * the keys again (rotation.c), told how by subject_keys_table.
 *
 * Unwrapping costs a table lookup, so each backend caches unwrapped keys,
 * at most gdprcrm.key_cache_size of them (CLOCK eviction, see below); an
 * evicted or flushed key is zeroed.  Tombstones are cached too:
 * destruction is final.  Cached keys, and the buffers that hold a new or
 * unwrapped key on its way into the cache, are secret memory
 * (secret_memory.c): locked where the limit allows, out of core dumps,
 * zeroed when freed.
 *
 * Invalidation: a transaction that destroyed keys advances the shared key
 * destruction epoch when it commits (shmem.c).  Every lookup first reads
 * the epoch and flushes the whole cache when it moved, so once a
 * destruction has committed, no statement anywhere decrypts with the old
 * key.  Erasures are rare; a full flush keeps this exact and simple.
 *
 * Trash: a subject in the trash keeps its key, but a role that is not a
 * superuser neither encrypts nor decrypts with it (decrypting reads NULL,
 * as for an erased subject) until the subject is restored.  Whether it is
 * in the trash is read from this backend's copy of the subjects' states
 * (subject_state.c), brought up to date at each use of a key, so a trash
 * or restore committed anywhere counts from the next value on, at the cost
 * of a few atomic reads and one hash probe, never a query of its own.
 * Superusers, and so the SECURITY DEFINER functions that export, restore
 * and purge a subject, still reach the key.
 *
 * Reach: a role that is not a superuser uses the key of a subject only when
 * the subject is a person of a project whose team includes it (team.c).
 * For such a role the person's project is read with the key row, in the
 * same query (a superuser's miss reads the key row alone), and kept in the
 * cache entry; each use checks it against the current role, so
 * a role change in a pooled connection reaches no key of the previous
 * role's projects.  Every subject out of reach gets the same error, and
 * none gets a key created.
 *
 * Aborts: a key created in a transaction that rolls back does not exist,
 * and a tombstone it wrote is gone, so a (sub)transaction abort after
 * creating or destroying keys flushes the cache too.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "announce.h"
#include "big_endian.h"
#include "csprng.h"
#include "guc.h"
#include "int64_order.h"
#include "keyring.h"
#include "owner_query.h"
#include "secret_memory.h"
#include "shmem.h"
#include "stored_key.h"
#include "subject_hash.h"
#include "subject_keys.h"
#include "subject_state.h"
#include "team.h"

/*
 * The cache is an open-addressing hash table (simplehash) of small entries
 * and, apart from it, a slab of fixed key slots.  Keys never move: the
 * table may shift entries on delete and copy them when it grows, but the
 * entries hold only a slot number, so no copy of a key is ever left
 * behind, and evicting a key zeroes its one slot.  Eviction is CLOCK over
 * the table: a hit only sets a bit in the entry it already read, where an
 * LRU list would write to two more, randomly placed, entries per hit.
 */
typedef struct CachedKey
{
	int64		subject;		/* hash key */
	int64		project;		/* the person's project; 0: none known */
	uint32		slot;			/* index into the key slab */
	uint32		version;
	char		status;			/* simplehash's */
	bool		destroyed;		/* a tombstone; slot unused */
	bool		referenced;		/* CLOCK: used since the hand last passed */
} CachedKey;

#define SH_PREFIX keycache
#define SH_ELEMENT_TYPE CachedKey
#define SH_KEY_TYPE int64
#define SH_KEY subject
#define SH_HASH_KEY(tb, key) hash_subject(key)
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * Key slots come in chunks of secret memory that are never moved or freed:
 * a backend's cache holds at most key_cache_size keys, so it maps at most
 * that many slots rounded up to a chunk (128 kB), and keeps them.
 */
#define SLAB_CHUNK_KEYS 4096
#define SLAB_MAX_CHUNKS ((16 * 1024 * 1024 + SLAB_CHUNK_KEYS - 1) / SLAB_CHUNK_KEYS)

static MemoryContext cache_context = NULL;
static keycache_hash *cache = NULL;
static unsigned char (*slab_chunks[SLAB_MAX_CHUNKS])[KEYRING_KEY_BYTES];
static uint32 slab_slots = 0;	/* slots allocated in slab_chunks */
static uint32 *free_slots = NULL;	/* stack of unused slot numbers */
static uint32 free_count = 0;
static uint32 clock_hand = 0;
static uint64 seen_epoch = 0;

/* The last entry used, copied: table entries move on insert and delete. */
static struct
{
	bool		valid;
	int64		subject;
	int64		project;
	uint32		version;
	bool		destroyed;
	uint32		slot;
}			last_used;

/* What the current transaction did, for the transaction callbacks. */
static bool created_in_xact = false;
static bool destroyed_in_xact = false;

/* Associated data binding a wrapped key to its subject and version. */
#define SUBJECT_KEY_AD_LABEL "gdprcrm subject key"
#define SUBJECT_KEY_AD_BYTES (sizeof(SUBJECT_KEY_AD_LABEL) - 1 + 8 + 4)

static void
subject_key_ad(int64 subject, uint32 version, unsigned char *ad)
{
	size_t		n = sizeof(SUBJECT_KEY_AD_LABEL) - 1;

	memcpy(ad, SUBJECT_KEY_AD_LABEL, n);
	big_endian_put(ad + n, (uint64) subject, 8);
	big_endian_put(ad + n + 8, version, 4);
}

static inline unsigned char *
slot_key(uint32 slot)
{
	return slab_chunks[slot / SLAB_CHUNK_KEYS][slot % SLAB_CHUNK_KEYS];
}

/*
 * take_slot
 *	  A free key slot, growing the slab by a chunk when none is free.
 */
static uint32
take_slot(void)
{
	if (free_count == 0)
	{
		uint32		chunk = slab_slots / SLAB_CHUNK_KEYS;

		if (chunk >= SLAB_MAX_CHUNKS)
			elog(ERROR, "gdprcrm subject key cache is full");
		/* Bookkeeping first: a chunk, once mapped, is never given back. */
		free_slots = free_slots == NULL ?
			MemoryContextAlloc(cache_context, (slab_slots + SLAB_CHUNK_KEYS) * sizeof(uint32)) :
			repalloc(free_slots, (slab_slots + SLAB_CHUNK_KEYS) * sizeof(uint32));
		slab_chunks[chunk] = secret_memory_region(SECRET_AREA_KEY_CACHE,
												  SLAB_CHUNK_KEYS * KEYRING_KEY_BYTES,
												  0);
		for (uint32 i = 0; i < SLAB_CHUNK_KEYS; i++)
			free_slots[free_count++] = slab_slots + SLAB_CHUNK_KEYS - 1 - i;
		slab_slots += SLAB_CHUNK_KEYS;
	}
	return free_slots[--free_count];
}

static void
remove_entry(CachedKey *entry)
{
	if (!entry->destroyed)
	{
		sodium_memzero(slot_key(entry->slot), KEYRING_KEY_BYTES);
		free_slots[free_count++] = entry->slot;
	}
	last_used.valid = false;
	keycache_delete_item(cache, entry);
}

static void
flush_cache(void)
{
	if (cache == NULL)
		return;
	for (uint32 c = 0; c < slab_slots / SLAB_CHUNK_KEYS; c++)
		sodium_memzero(slab_chunks[c], SLAB_CHUNK_KEYS * KEYRING_KEY_BYTES);
	free_count = 0;
	for (uint32 i = 0; i < slab_slots; i++)
		free_slots[free_count++] = slab_slots - 1 - i;
	keycache_reset(cache);
	last_used.valid = false;
}

/*
 * evict_one
 *	  CLOCK: skip entries used since the hand last passed them, clearing
 *	  their bit; evict the first one that was not.
 */
static void
evict_one(void)
{
	for (;;)
	{
		CachedKey  *entry = &cache->data[clock_hand];

		clock_hand = (clock_hand + 1) & cache->sizemask;
		if (entry->status != keycache_SH_IN_USE)
			continue;
		if (entry->referenced)
		{
			entry->referenced = false;
			continue;
		}
		remove_entry(entry);
		return;
	}
}

static void
remember_last(const CachedKey *entry)
{
	last_used.valid = true;
	last_used.subject = entry->subject;
	last_used.project = entry->project;
	last_used.version = entry->version;
	last_used.destroyed = entry->destroyed;
	last_used.slot = entry->slot;
}

/*
 * lookup
 *	  Find a subject in the cache and copy what the caller needs; false
 *	  when absent.  First drops the whole cache if any backend destroyed
 *	  keys since this one last looked.
 */
static bool
lookup(int64 subject)
{
	uint64		epoch;
	CachedKey  *entry;

	/* On a standby: erasures replayed since the last statement. */
	announce_catch_up();
	epoch = shmem_key_destroy_epoch();
	if (epoch != seen_epoch)
	{
		flush_cache();
		seen_epoch = epoch;
	}
	if (last_used.valid && last_used.subject == subject)
		return true;
	if (cache == NULL)
		return false;

	entry = keycache_lookup(cache, subject);
	if (entry == NULL)
		return false;
	entry->referenced = true;
	remember_last(entry);
	return true;
}

/*
 * remember
 *	  Cache a subject's key (or tombstone) and make it the last used.
 */
static void
remember(int64 subject, int64 project, uint32 version, bool destroyed,
		 const unsigned char *key)
{
	CachedKey  *entry;
	bool		found;
	uint32		slot;

	if (cache == NULL)
	{
		cache_context = AllocSetContextCreate(TopMemoryContext,
											  "gdprcrm subject key cache",
											  ALLOCSET_DEFAULT_SIZES);
		cache = keycache_create(cache_context, 1024, NULL);
	}
	while (cache->members >= (uint32) gdprcrm_key_cache_size)
		evict_one();

	/* Take the slot first: an entry must never point at no slot. */
	slot = destroyed ? 0 : take_slot();
	entry = keycache_insert(cache, subject, &found);
	if (found && !entry->destroyed)
	{
		sodium_memzero(slot_key(entry->slot), KEYRING_KEY_BYTES);
		free_slots[free_count++] = entry->slot;
	}
	entry->project = project;
	entry->version = version;
	entry->destroyed = destroyed;
	entry->referenced = true;
	entry->slot = slot;
	if (!destroyed)
		memcpy(slot_key(slot), key, KEYRING_KEY_BYTES);
	remember_last(entry);
}

/*
 * The key table, gdprcrm.subject_keys: one row per subject, keyed by the
 * subject id alone, so that on a cluster distributed by subject the row
 * lives on the node that holds the subject's data.  Read and written as
 * the tables' owner (owner_query.c).
 */
#define KEY_TABLE GDPRCRM_SCHEMA ".subject_keys"

/* Plans survive across calls; the plan cache re-plans them when needed. */
static SPIPlanPtr fetch_plan = NULL;
static SPIPlanPtr fetch_reach_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_many_plan = NULL;
static SPIPlanPtr destroy_plan = NULL;

/*
 * fetch_key_row
 *	  Read a subject's key row as of the latest committed state (and this
 *	  transaction's own changes).  False when the subject has no key row.
 *	  With project non-NULL, also the project of the person with that id
 *	  in *project (0 when there is none) for the team check, read in the
 *	  same statement so that neither the answer nor its cost says which of
 *	  the two is missing; without, one index probe of the key table only
 *	  (for callers that need no team check, such as superusers).
 *
 *	  The team check's half is team.h's subquery on gdprcrm.people, whose
 *	  id is the subject id: on a cluster where both tables are distributed
 *	  by subject and co-located, the one statement is still answered by the
 *	  node that holds the subject.  Were people placed otherwise, that half
 *	  would become a query of its own, run on every miss all the same.
 */
static bool
fetch_key_row(int64 subject, StoredKey *out, int64 *project)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subject)};
	OwnerQuery	query;
	bool		found = false;
	bool		isnull;
	SPIPlanPtr	plan;

	owner_query_begin(&query);
	if (project != NULL)
		plan = owner_query_prepare(&fetch_reach_plan,
								   "SELECT k.key_version, k.wrapped_key, k.wrapped_with, "
								   TEAM_SUBJECT_PROJECT_SQL
								   " FROM (VALUES ($1::pg_catalog.int8)) AS x (subject)"
								   " LEFT JOIN " KEY_TABLE " k"
								   " ON k.subject OPERATOR(pg_catalog.=) x.subject",
								   1, types);
	else
		plan = owner_query_prepare(&fetch_plan,
								   "SELECT key_version, wrapped_key, wrapped_with"
								   " FROM " KEY_TABLE
								   " WHERE subject OPERATOR(pg_catalog.=) $1",
								   1, types);
	(void) owner_query_read(plan, values, 1, KEY_TABLE);
	if (project != NULL)
	{
		Datum		d;

		if (SPI_processed != 1)
			elog(ERROR, "could not read %s", KEY_TABLE);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
		*project = isnull ? 0 : DatumGetInt64(d);
	}
	if (SPI_processed == 1)
	{
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			stored_key_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, 2, out);
			found = true;
		}
	}
	owner_query_end(&query);
	return found;
}

/*
 * insert_key_row
 *	  Insert a subject's first key.  False when a concurrent transaction
 *	  inserted one first (the caller then reads that one).
 */
static bool
insert_key_row(int64 subject, const StoredKey *key)
{
	Oid			types[4] = {INT8OID, INT4OID, BYTEAOID, TEXTOID};
	Datum		values[4];

	values[0] = Int64GetDatum(subject);
	values[1] = Int32GetDatum((int32) key->version);
	values[2] = stored_key_wrapped_datum(key);
	values[3] = CStringGetTextDatum(key->wrapped_with);
	return owner_query_execute(&insert_plan,
							   "INSERT INTO " KEY_TABLE
							   " (subject, key_version, wrapped_key, wrapped_with)"
							   " VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO NOTHING",
							   4, types, values, SPI_OK_INSERT, KEY_TABLE) > 0;
}

typedef struct SubjectPosition
{
	int64		subject;
	int			position;
} SubjectPosition;

static int
compare_subject_position(const void *a, const void *b)
{
	return int64_order(&((const SubjectPosition *) a)->subject,
					   &((const SubjectPosition *) b)->subject);
}

/*
 * insert_key_rows
 *	  Insert the first keys of count distinct subjects in one statement;
 *	  inserted[i] tells whether subjects[i]'s key went in (false: the
 *	  subject already had one, or a concurrent transaction inserted one
 *	  first).  Returns how many went in.
 */
static int
insert_key_rows(const int64 *subjects, const StoredKey *keys, int count,
				bool *inserted)
{
	Oid			types[4] = {INT8ARRAYOID, INT4ARRAYOID, BYTEAARRAYOID, TEXTARRAYOID};
	Datum		values[4];
	Datum	   *ids = palloc(sizeof(Datum) * count);
	Datum	   *versions = palloc(sizeof(Datum) * count);
	Datum	   *wrapped = palloc(sizeof(Datum) * count);
	Datum	   *with = palloc(sizeof(Datum) * count);
	OwnerQuery	query;
	int			done;

	for (int i = 0; i < count; i++)
	{
		ids[i] = Int64GetDatum(subjects[i]);
		versions[i] = Int32GetDatum((int32) keys[i].version);
		wrapped[i] = stored_key_wrapped_datum(&keys[i]);
		with[i] = CStringGetTextDatum(keys[i].wrapped_with);
		inserted[i] = false;
	}
	values[0] = PointerGetDatum(construct_array(ids, count, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(versions, count, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(wrapped, count, BYTEAOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(with, count, TEXTOID, -1, false, TYPALIGN_INT));

	owner_query_begin(&query);
	done = (int) owner_query_write(owner_query_prepare(&insert_many_plan,
													   "INSERT INTO " KEY_TABLE
													   " (subject, key_version, wrapped_key, wrapped_with)"
													   " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
													   " pg_catalog.unnest($3), pg_catalog.unnest($4))"
													   " ON CONFLICT (subject) DO NOTHING RETURNING subject",
													   4, types),
								   values, SPI_OK_INSERT_RETURNING, KEY_TABLE);
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
	owner_query_end(&query);
	return done;
}

/*
 * destroy_key_row
 *	  Replace a subject's wrapped key by a tombstone, or record a tombstone
 *	  for a subject that never had a key, so that none is created later.
 *	  One indexed row either way.  True when this call destroyed the key,
 *	  false when it already was.
 */
static bool
destroy_key_row(int64 subject)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subject)};

	/*
	 * One statement, so that a concurrent first insert of the subject's
	 * key is waited for and then destroyed, never missed.
	 */
	return owner_query_execute(&destroy_plan,
							   "INSERT INTO " KEY_TABLE " AS k"
							   " (subject, key_version, destroyed_at)"
							   " VALUES ($1, 1, pg_catalog.now())"
							   " ON CONFLICT (subject) DO UPDATE"
							   " SET wrapped_key = NULL, wrapped_with = NULL, destroyed_at = pg_catalog.now()"
							   " WHERE k.destroyed_at IS NULL",
							   1, types, values, SPI_OK_INSERT, KEY_TABLE) > 0;
}

/*
 * subject_key_binding
 *	  For root key rotation: a subject key is wrapped under the wrapping
 *	  purpose key, bound to its subject and version.
 */
static KeyPurpose
subject_key_binding(Datum id, uint32 version, unsigned char *ad, size_t *ad_len)
{
	StaticAssertStmt(SUBJECT_KEY_AD_BYTES <= STORED_KEY_AD_MAX_BYTES,
					 "subject key associated data too long");
	subject_key_ad(DatumGetInt64(id), version, ad);
	*ad_len = SUBJECT_KEY_AD_BYTES;
	return KEY_PURPOSE_WRAP;
}

/*
 * subject_keys_table
 *	  gdprcrm.subject_keys for root key rotation (rotation.c): any number
 *	  of keys, so a batch at a time, in subject order, skipping rows that
 *	  others hold locked (the next call takes them).
 */
const StoredKeyTable subject_keys_table = {
	.name = KEY_TABLE,
	.stale_sql = "SELECT subject, key_version, wrapped_key, wrapped_with"
	" FROM " KEY_TABLE
	" WHERE wrapped_key IS NOT NULL"
	" AND wrapped_with OPERATOR(pg_catalog.<>) $1"
	" ORDER BY subject LIMIT $2 FOR UPDATE SKIP LOCKED",
	.rewrapped_sql = "UPDATE " KEY_TABLE
	" SET wrapped_key = $2, wrapped_with = $3"
	" WHERE subject OPERATOR(pg_catalog.=) $1",
	.id_type = INT8OID,
	.binding = subject_key_binding,
};

/*
 * create_key
 *	  Make, wrap and store a subject's first data key, and cache it.  False
 *	  when another transaction stored one first.
 */
static bool
create_key(int64 subject, int64 project)
{
	unsigned char *key = secret_memory_alloc(CurrentMemoryContext, KEYRING_KEY_BYTES);
	unsigned char ad[SUBJECT_KEY_AD_BYTES];
	StoredKey	row;
	volatile bool created = false;

	memset(&row, 0, sizeof(row));
	row.version = 1;
	csprng_fill(key, KEYRING_KEY_BYTES);
	subject_key_ad(subject, row.version, ad);
	keyring_wrap(KEY_PURPOSE_WRAP, ad, sizeof(ad), key, row.wrapped);
	strlcpy(row.wrapped_with, keyring_fingerprint(), sizeof(row.wrapped_with));

	PG_TRY();
	{
		if (insert_key_row(subject, &row))
		{
			created_in_xact = true;
			remember(subject, project, row.version, false, key);
			created = true;
		}
	}
	PG_FINALLY();
	{
		secret_memory_free(key);
	}
	PG_END_TRY();
	return created;
}

/*
 * deny
 *	  The one answer for a subject outside the caller's teams, whether it
 *	  has a key, was erased or does not exist.
 */
static void
deny(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for this subject"),
			 errhint("Values are encrypted and decrypted only for people of projects whose team includes the current role.")));
}

/*
 * load
 *	  Read a subject's key row, check that the current role may reach the
 *	  subject, unwrap the key and cache the result as the last used entry.
 *	  With create, a subject without a row gets a new key; without, such a
 *	  subject is an error: its values came from elsewhere.
 */
static void
load(int64 subject, bool create)
{
	StoredKey	row;
	int64		project;
	bool		found;
	unsigned char *key;
	unsigned char ad[SUBJECT_KEY_AD_BYTES];

	/* A superuser reaches every subject: no need to read the project. */
	project = 0;
	found = fetch_key_row(subject, &row, superuser() ? NULL : &project);
	if (!superuser() && !team_includes(GetUserId(), project))
		deny();
	if (!found)
	{
		if (!create)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not decrypt value: no data key exists for its subject"),
					 errhint("Encrypted values cannot be moved between databases.")));
		if (create_key(subject, project))
			return;
		if (!fetch_key_row(subject, &row, superuser() ? NULL : &project))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent creation of a subject data key")));
	}
	if (row.destroyed)
	{
		remember(subject, project, row.version, true, NULL);
		return;
	}

	subject_key_ad(subject, row.version, ad);
	key = secret_memory_alloc(CurrentMemoryContext, KEYRING_KEY_BYTES);
	PG_TRY();
	{
		keyring_unwrap(KEY_PURPOSE_WRAP, row.wrapped_with, ad, sizeof(ad),
					   row.wrapped, sizeof(row.wrapped), key);
		remember(subject, project, row.version, false, key);
	}
	PG_FINALLY();
	{
		secret_memory_free(key);
	}
	PG_END_TRY();
}

/*
 * find
 *	  Make subject's key (or tombstone) the last used entry, loading it when
 *	  it is not cached, and check that the current role may reach the
 *	  subject.  A cached entry that fails the check is read again (the
 *	  person may have been created since its key was), and the check then
 *	  decides.
 */
static void
find(int64 subject, bool create)
{
	/*
	 * A superuser reaches every subject; skipping the check also keeps the
	 * team list on the application role that SECURITY DEFINER functions
	 * such as identify() act for.
	 */
	if (!lookup(subject))
		load(subject, create);
	else if (!superuser() && !team_includes(GetUserId(), last_used.project))
		load(subject, create);
}

/*
 * withheld_in_trash
 *	  Whether subject is in the trash and the current role is not a
 *	  superuser, so that its key is withheld (see the file header).  Asked
 *	  after find(), so that a subject out of the role's reach gets deny()'s
 *	  answer whatever its state.  Reads no key table and leaves the cache
 *	  and last_used alone.
 */
static bool
withheld_in_trash(int64 subject)
{
	const SubjectState *state;

	if (superuser())
		return false;
	state = subject_state_current(subject);
	return state != NULL && state->trashed;
}

/*
 * subject_keys_for_encrypt
 *	  The data key to encrypt a new value of subject with, created on first
 *	  use; its version in *version.  The key lives in the backend cache and
 *	  stays valid until the next call into this module.  Errors for an
 *	  erased subject, and for a subject in the trash unless the role is a
 *	  superuser.
 */
const unsigned char *
subject_keys_for_encrypt(int64 subject, uint32 *version)
{
	find(subject, true);
	if (last_used.destroyed)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot encrypt a value for an erased subject"),
				 errdetail("The subject's data key was destroyed.")));
	if (withheld_in_trash(subject))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot encrypt a value for a subject in the trash"),
				 errhint("Restore the subject with gdprcrm.restore_subject() first.")));
	*version = last_used.version;
	return slot_key(last_used.slot);
}

/*
 * subject_keys_for_decrypt
 *	  The data key of subject at version; NULL with *erased set when it was
 *	  destroyed, NULL with *erased clear when the subject is in the trash
 *	  and the role is not a superuser.  Same lifetime as
 *	  subject_keys_for_encrypt's result.
 */
const unsigned char *
subject_keys_for_decrypt(int64 subject, uint32 version, bool *erased)
{
	find(subject, false);
	*erased = last_used.destroyed;
	if (last_used.destroyed)
		return NULL;
	if (withheld_in_trash(subject))
		return NULL;
	if (last_used.version != version)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decrypt value: its data key version does not exist")));
	return slot_key(last_used.slot);
}

/*
 * subject_keys_is_destroyed
 *	  Whether subject's data key was destroyed.  Errors for a subject
 *	  without any key row.
 */
bool
subject_keys_is_destroyed(int64 subject)
{
	find(subject, false);
	return last_used.destroyed;
}

static void
xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (destroyed_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that destroyed gdprcrm subject keys")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (destroyed_in_xact)
				shmem_advance_key_destroy_epoch();
			created_in_xact = destroyed_in_xact = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:

			/*
			 * Keys created here may never exist, and tombstones seen here
			 * may be rolled back: forget both.
			 */
			if (created_in_xact || destroyed_in_xact)
				flush_cache();
			created_in_xact = destroyed_in_xact = false;
			break;
		default:
			break;
	}
}

static void
subxact_callback(SubXactEvent event,
				 SubTransactionId mySubid pg_attribute_unused(),
				 SubTransactionId parentSubid pg_attribute_unused(),
				 void *arg pg_attribute_unused())
{
	if (event == SUBXACT_EVENT_ABORT_SUB && (created_in_xact || destroyed_in_xact))
		flush_cache();
}

/*
 * subject_keys_init
 *	  Register the transaction callbacks that keep the cache truthful.
 */
void
subject_keys_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}

/*
 * gdprcrm.shred_subject_key(subject bigint) -> boolean
 *	  Destroy a subject's data key, keeping a tombstone, and record the
 *	  erasure in the subject's state.  True when this call erased the
 *	  subject, false when it already was.  One indexed row of each table
 *	  whatever the subject's data.  Other backends stop using the key when
 *	  this transaction commits; this one at once.
 */
PG_FUNCTION_INFO_V1(gdprcrm_shred_subject_key);
Datum
gdprcrm_shred_subject_key(PG_FUNCTION_ARGS)
{
	int64		subject = PG_GETARG_INT64(0);
	CachedKey  *entry;
	bool		erased;

	/* Like every subject id gdprcrm records; 0 stands for the purposes. */
	if (subject <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("subject ids are positive")));

	/*
	 * Row filters hide an erased subject's rows once this commits.  The
	 * state row first: every change of a subject's state locks it before
	 * anything else, so changes of one subject queue on that one row.
	 */
	subject_state_record_erasure(subject);
	erased = destroy_key_row(subject);
	destroyed_in_xact = true;
	announce_keys_destroyed();
	if (cache != NULL && (entry = keycache_lookup(cache, subject)) != NULL)
		remove_entry(entry);
	last_used.valid = false;
	PG_RETURN_BOOL(erased);
}

/*
 * gdprcrm.create_subject_keys(subjects bigint[]) -> integer
 *	  Create the first data keys of many subjects in one statement and cache
 *	  them, so that encrypting their first values needs no query of its own:
 *	  for import_people(), which knows its new people's ids (for a single
 *	  subject it saves nothing over encrypt()'s own creation).
 *	  Subjects that already have a key (or a tombstone) keep it.  Returns
 *	  how many keys were created.  Not executable by PUBLIC: it creates keys
 *	  without the team check of encrypt().  The new keys live in one buffer
 *	  of secret memory, zeroed before it is freed, errors included.
 */
PG_FUNCTION_INFO_V1(gdprcrm_create_subject_keys);
Datum
gdprcrm_create_subject_keys(PG_FUNCTION_ARGS)
{
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			count;
	int64	   *subjects;
	StoredKey  *rows;
	bool	   *inserted;
	unsigned char *keys;
	volatile int created = 0;

	deconstruct_array(array, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &count);
	if (count == 0)
		PG_RETURN_INT32(0);
	subjects = palloc(sizeof(int64) * count);
	for (int i = 0; i < count; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("subject ids must not be null")));
		subjects[i] = DatumGetInt64(elems[i]);
	}

	/*
	 * Each subject once: with a repeated one, the row that goes in and the
	 * key that is cached could be different draws.
	 */
	qsort(subjects, count, sizeof(int64), int64_order);
	{
		int			unique = 1;

		for (int i = 1; i < count; i++)
			if (subjects[i] != subjects[unique - 1])
				subjects[unique++] = subjects[i];
		count = unique;
	}
	rows = palloc0(sizeof(StoredKey) * count);
	inserted = palloc(sizeof(bool) * count);
	keys = secret_memory_alloc(CurrentMemoryContext, KEYRING_KEY_BYTES * (Size) count);

	PG_TRY();
	{
		csprng_fill(keys, KEYRING_KEY_BYTES * (Size) count);
		for (int i = 0; i < count; i++)
		{
			unsigned char ad[SUBJECT_KEY_AD_BYTES];

			rows[i].version = 1;
			subject_key_ad(subjects[i], rows[i].version, ad);
			keyring_wrap(KEY_PURPOSE_WRAP, ad, sizeof(ad), keys + KEYRING_KEY_BYTES * i,
						 rows[i].wrapped);
			strlcpy(rows[i].wrapped_with, keyring_fingerprint(), sizeof(rows[i].wrapped_with));
		}
		created = insert_key_rows(subjects, rows, count, inserted);
		if (created > 0)
			created_in_xact = true;
		for (int i = 0; i < count; i++)
			if (inserted[i])
				remember(subjects[i], 0, rows[i].version, false, keys + KEYRING_KEY_BYTES * i);
	}
	PG_FINALLY();
	{
		sodium_memzero(keys, KEYRING_KEY_BYTES * (Size) count);
	}
	PG_END_TRY();
	secret_memory_free(keys);
	PG_RETURN_INT32(created);
}
