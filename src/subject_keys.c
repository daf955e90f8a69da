/*-------------------------------------------------------------------------
 * subject_keys.c
 *	  Per-subject data keys, their backend cache, and crypto-shredding.
 *
 * Every data subject has one random 256-bit data key, created on first
 * use and stored only wrapped (keyring_wrap under the wrapping purpose
 * key) in gdprcrm.subject_keys.  Destroying it replaces the wrapped key by
 * a tombstone: every value of that subject, wherever a copy of it lives,
 * can no longer be decrypted.
 *
 * Unwrapping costs a table lookup, so each backend caches unwrapped keys
 * in a hash table bounded by gdprcrm.key_cache_size, least recently used
 * evicted first; an evicted or flushed key is zeroed.  Tombstones are
 * cached too: destruction is final.
 *
 * Invalidation: a transaction that destroyed keys advances the shared key
 * destruction epoch when it commits (shmem.c).  Every lookup first reads
 * the epoch and flushes the whole cache when it moved, so once a
 * destruction has committed, no statement anywhere decrypts with the old
 * key.  Erasures are rare; a full flush keeps this exact and simple.
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
#include "lib/ilist.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "csprng.h"
#include "database_keys.h"
#include "guc.h"
#include "keyring.h"
#include "shmem.h"
#include "store.h"
#include "subject_keys.h"

typedef struct CachedKey
{
	int64		subject;		/* hash key; must be first */
	uint32		version;
	bool		destroyed;
	unsigned char key[KEYRING_KEY_BYTES];
	dlist_node	lru;			/* most recently used at the head */
} CachedKey;

static HTAB *cache = NULL;
static dlist_head lru_list = DLIST_STATIC_INIT(lru_list);
static long cached_count = 0;
static CachedKey *last_used = NULL;
static uint64 seen_epoch = 0;

/* What the current transaction did, for the transaction callbacks. */
static bool created_in_xact = false;
static bool destroyed_in_xact = false;

/* Associated data binding a wrapped key to its subject and version. */
#define SUBJECT_KEY_AD_LABEL "gdprcrm subject key"
#define SUBJECT_KEY_AD_BYTES (sizeof(SUBJECT_KEY_AD_LABEL) - 1 + 8 + 4)

static void
subject_key_ad(int64 subject, uint32 version, unsigned char *ad)
{
	uint64		s = (uint64) subject;
	size_t		n = sizeof(SUBJECT_KEY_AD_LABEL) - 1;

	memcpy(ad, SUBJECT_KEY_AD_LABEL, n);
	for (int i = 0; i < 8; i++)
		ad[n + i] = (unsigned char) (s >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		ad[n + 8 + i] = (unsigned char) (version >> (24 - 8 * i));
}

static void
remove_entry(CachedKey *entry)
{
	int64		subject = entry->subject;

	sodium_memzero(entry->key, sizeof(entry->key));
	dlist_delete(&entry->lru);
	if (entry == last_used)
		last_used = NULL;
	hash_search(cache, &subject, HASH_REMOVE, NULL);
	cached_count--;
}

static void
flush_cache(void)
{
	while (!dlist_is_empty(&lru_list))
		remove_entry(dlist_head_element(CachedKey, lru, &lru_list));
}

/*
 * lookup
 *	  The cached entry of a subject, or NULL.  First drops the whole cache
 *	  if any backend destroyed keys since this one last looked.
 */
static CachedKey *
lookup(int64 subject)
{
	uint64		epoch = shmem_key_destroy_epoch();
	CachedKey  *entry;

	if (epoch != seen_epoch)
	{
		flush_cache();
		seen_epoch = epoch;
	}
	if (last_used != NULL && last_used->subject == subject)
		return last_used;
	if (cache == NULL)
		return NULL;

	entry = hash_search(cache, &subject, HASH_FIND, NULL);
	if (entry != NULL)
	{
		dlist_move_head(&lru_list, &entry->lru);
		last_used = entry;
	}
	return entry;
}

static CachedKey *
remember(int64 subject, uint32 version, bool destroyed, const unsigned char *key)
{
	CachedKey  *entry;
	bool		found;

	if (cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(CachedKey);
		ctl.hcxt = TopMemoryContext;
		cache = hash_create("gdprcrm subject key cache", 1024, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	while (cached_count >= gdprcrm_key_cache_size && !dlist_is_empty(&lru_list))
		remove_entry(dlist_tail_element(CachedKey, lru, &lru_list));

	entry = hash_search(cache, &subject, HASH_ENTER, &found);
	if (found)
		dlist_delete(&entry->lru);
	else
		cached_count++;
	entry->version = version;
	entry->destroyed = destroyed;
	if (destroyed)
		sodium_memzero(entry->key, sizeof(entry->key));
	else
		memcpy(entry->key, key, sizeof(entry->key));
	dlist_push_head(&lru_list, &entry->lru);
	last_used = entry;
	return entry;
}

/*
 * create_key
 *	  Make, wrap and store a subject's first data key.  NULL when another
 *	  transaction stored one first.
 */
static CachedKey *
create_key(int64 subject)
{
	unsigned char key[KEYRING_KEY_BYTES];
	unsigned char ad[SUBJECT_KEY_AD_BYTES];
	StoredKey	row;
	CachedKey  *entry = NULL;

	memset(&row, 0, sizeof(row));
	row.version = 1;
	csprng_fill(key, sizeof(key));
	subject_key_ad(subject, row.version, ad);
	keyring_wrap(KEY_PURPOSE_WRAP, ad, sizeof(ad), key, row.wrapped);
	strlcpy(row.wrapped_with, keyring_fingerprint(), sizeof(row.wrapped_with));

	if (store_insert_subject_key(subject, &row))
	{
		created_in_xact = true;
		entry = remember(subject, row.version, false, key);
	}
	sodium_memzero(key, sizeof(key));
	return entry;
}

/*
 * load
 *	  Read a subject's key row, unwrap it and cache the result.  With
 *	  create, a subject without a row gets a new key; without, such a
 *	  subject is an error: its values came from elsewhere.
 */
static CachedKey *
load(int64 subject, bool create)
{
	StoredKey	row;
	unsigned char key[KEYRING_KEY_BYTES];
	unsigned char ad[SUBJECT_KEY_AD_BYTES];
	CachedKey  *entry;

	if (!store_fetch_subject_key(subject, &row))
	{
		if (!create)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not decrypt value: no data key exists for its subject"),
					 errhint("Encrypted values cannot be moved between databases.")));
		entry = create_key(subject);
		if (entry != NULL)
			return entry;
		if (!store_fetch_subject_key(subject, &row))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent creation of a subject data key")));
	}
	if (row.destroyed)
		return remember(subject, row.version, true, NULL);

	subject_key_ad(subject, row.version, ad);
	keyring_unwrap(KEY_PURPOSE_WRAP, row.wrapped_with, ad, sizeof(ad),
				   row.wrapped, sizeof(row.wrapped), key);
	entry = remember(subject, row.version, false, key);
	sodium_memzero(key, sizeof(key));
	return entry;
}

/*
 * subject_keys_for_encrypt
 *	  The data key to encrypt a new value of subject with, created on first
 *	  use; its version in *version.  The key lives in the backend cache and
 *	  stays valid until the next call into this module.  Errors for an
 *	  erased subject.
 */
const unsigned char *
subject_keys_for_encrypt(int64 subject, uint32 *version)
{
	CachedKey  *entry = lookup(subject);

	if (entry == NULL)
		entry = load(subject, true);
	if (entry->destroyed)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot encrypt a value for an erased subject"),
				 errdetail("The subject's data key was destroyed.")));
	*version = entry->version;
	return entry->key;
}

/*
 * subject_keys_for_decrypt
 *	  The data key of subject at version, or NULL with *erased set when it
 *	  was destroyed.  Same lifetime as subject_keys_for_encrypt's result.
 */
const unsigned char *
subject_keys_for_decrypt(int64 subject, uint32 version, bool *erased)
{
	CachedKey  *entry = lookup(subject);

	if (entry == NULL)
		entry = load(subject, false);
	*erased = entry->destroyed;
	if (entry->destroyed)
		return NULL;
	if (entry->version != version)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decrypt value: its data key version does not exist")));
	return entry->key;
}

/*
 * subject_keys_is_destroyed
 *	  Whether subject's data key was destroyed.  Errors for a subject
 *	  without any key row.
 */
bool
subject_keys_is_destroyed(int64 subject)
{
	CachedKey  *entry = lookup(subject);

	if (entry == NULL)
		entry = load(subject, false);
	return entry->destroyed;
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
 *	  Destroy a subject's data key, keeping a tombstone.  True when this
 *	  call erased the subject, false when it already was.  One indexed row
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

	erased = store_destroy_subject_key(subject);
	destroyed_in_xact = true;
	entry = lookup(subject);
	if (entry != NULL)
		remove_entry(entry);
	PG_RETURN_BOOL(erased);
}

static void
rewrap_subject_key(int64 subject, const StoredKey *old, unsigned char *new_wrapped)
{
	unsigned char key[KEYRING_KEY_BYTES];
	unsigned char ad[SUBJECT_KEY_AD_BYTES];

	subject_key_ad(subject, old->version, ad);
	keyring_unwrap(KEY_PURPOSE_WRAP, old->wrapped_with, ad, sizeof(ad),
				   old->wrapped, sizeof(old->wrapped), key);
	keyring_wrap(KEY_PURPOSE_WRAP, ad, sizeof(ad), key, new_wrapped);
	sodium_memzero(key, sizeof(key));
}

/*
 * gdprcrm.rewrap_keys(batch_size integer) -> bigint
 *	  During a root key rotation: wrap again under the current root key up
 *	  to batch_size subject keys (and every database key) still wrapped
 *	  under the previous one.  Returns how many it rewrapped; call until 0.
 *	  Data are never re-encrypted.
 */
PG_FUNCTION_INFO_V1(gdprcrm_rewrap_keys);
Datum
gdprcrm_rewrap_keys(PG_FUNCTION_ARGS)
{
	int32		batch_size = PG_GETARG_INT32(0);
	int64		done;

	if (batch_size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch size must be positive")));
	(void) keyring_fingerprint();	/* errors without preload */

	done = store_rewrap_database_keys(database_keys_rewrap);
	done += store_rewrap_subject_keys(batch_size, rewrap_subject_key);
	PG_RETURN_INT64(done);
}
