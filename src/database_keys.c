/*-------------------------------------------------------------------------
 * database_keys.c
 *	  Random per-database keys for values that must outlive the root key.
 *
 * Blind indexes (and later pseudonyms) are stored in tables and compared
 * across years, so their keys must not change when the root key is
 * rotated.  Each is therefore a random key made on first use in a
 * database and stored in gdprcrm.database_keys wrapped under the root
 * key's derived key for that purpose, exactly like subject keys: a
 * rotation rewraps it, and every blind index stays valid.  Being per
 * database, blind indexes of two databases cannot be linked.
 *
 * These keys never change once created, so a backend caches them for its
 * lifetime, except that one created by a transaction that rolls back is
 * forgotten.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "access/xact.h"

#include "csprng.h"
#include "database_keys.h"

typedef struct DatabaseKeySpec
{
	const char *name;			/* gdprcrm.database_keys.purpose */
	KeyPurpose	wrapped_by;		/* root-derived key that wraps it */
} DatabaseKeySpec;

static const DatabaseKeySpec specs[DATABASE_KEY_COUNT] = {
	[DATABASE_KEY_BLIND_INDEX] = {"blind_index", KEY_PURPOSE_BLIND_INDEX},
};

static unsigned char cached_keys[DATABASE_KEY_COUNT][KEYRING_KEY_BYTES];
static bool cached[DATABASE_KEY_COUNT];
static bool created_in_xact = false;

#define DATABASE_KEY_AD_LABEL "gdprcrm database key "

/* Associated data: label and purpose name; returns its length. */
static size_t
database_key_ad(const char *name, unsigned char *ad, size_t ad_size)
{
	size_t		label = sizeof(DATABASE_KEY_AD_LABEL) - 1;
	size_t		n = strlen(name);

	if (label + n > ad_size)
		elog(ERROR, "gdprcrm database key name too long");
	memcpy(ad, DATABASE_KEY_AD_LABEL, label);
	memcpy(ad + label, name, n);
	return label + n;
}

static const DatabaseKeySpec *
spec_by_name(const char *name)
{
	for (int i = 0; i < DATABASE_KEY_COUNT; i++)
		if (strcmp(specs[i].name, name) == 0)
			return &specs[i];
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("gdprcrm.database_keys holds a key of unknown purpose")));
	return NULL;
}

/*
 * database_keys_get
 *	  The key of a purpose in this database, created on first use.  Points
 *	  to backend-lifetime storage.
 */
const unsigned char *
database_keys_get(DatabaseKeyPurpose purpose)
{
	const DatabaseKeySpec *spec = &specs[purpose];
	unsigned char ad[64];
	size_t		ad_len;
	StoredKey	row;

	if (cached[purpose])
		return cached_keys[purpose];

	ad_len = database_key_ad(spec->name, ad, sizeof(ad));
	if (!store_fetch_database_key(spec->name, &row))
	{
		memset(&row, 0, sizeof(row));
		csprng_fill(cached_keys[purpose], KEYRING_KEY_BYTES);
		keyring_wrap(spec->wrapped_by, ad, ad_len, cached_keys[purpose], row.wrapped);
		strlcpy(row.wrapped_with, keyring_fingerprint(), sizeof(row.wrapped_with));
		PG_TRY();
		{
			if (store_insert_database_key(spec->name, &row))
			{
				created_in_xact = true;
				cached[purpose] = true;
			}
		}
		PG_CATCH();
		{
			sodium_memzero(cached_keys[purpose], KEYRING_KEY_BYTES);
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (cached[purpose])
			return cached_keys[purpose];
		sodium_memzero(cached_keys[purpose], KEYRING_KEY_BYTES);
		if (!store_fetch_database_key(spec->name, &row))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent creation of a gdprcrm database key")));
	}
	keyring_unwrap(spec->wrapped_by, row.wrapped_with, ad, ad_len,
				   row.wrapped, sizeof(row.wrapped), cached_keys[purpose]);
	cached[purpose] = true;
	return cached_keys[purpose];
}

/*
 * database_keys_rewrap
 *	  Rewrap callback for store_rewrap_database_keys.
 */
void
database_keys_rewrap(const char *purpose, const StoredKey *old,
					 unsigned char *new_wrapped)
{
	const DatabaseKeySpec *spec = spec_by_name(purpose);
	unsigned char key[KEYRING_KEY_BYTES];
	unsigned char ad[64];
	size_t		ad_len = database_key_ad(spec->name, ad, sizeof(ad));

	keyring_unwrap(spec->wrapped_by, old->wrapped_with, ad, ad_len,
				   old->wrapped, sizeof(old->wrapped), key);
	keyring_wrap(spec->wrapped_by, ad, ad_len, key, new_wrapped);
	sodium_memzero(key, sizeof(key));
}

static void
forget_all(void)
{
	sodium_memzero(cached_keys, sizeof(cached_keys));
	memset(cached, 0, sizeof(cached));
}

static void
xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		if (created_in_xact)
			forget_all();
		created_in_xact = false;
	}
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		created_in_xact = false;
}

static void
subxact_callback(SubXactEvent event,
				 SubTransactionId mySubid pg_attribute_unused(),
				 SubTransactionId parentSubid pg_attribute_unused(),
				 void *arg pg_attribute_unused())
{
	if (event == SUBXACT_EVENT_ABORT_SUB && created_in_xact)
		forget_all();
}

/*
 * database_keys_init
 *	  Register the callbacks that forget keys of rolled-back transactions.
 */
void
database_keys_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
