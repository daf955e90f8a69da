/*-------------------------------------------------------------------------
 * database_keys.c
 *	  Random per-database keys for values that must outlive the root key.
 *
 * Blind indexes (and later pseudonyms) are stored in tables and compared
 * across years, so their keys must not change when the root key is
 * rotated.  Each is therefore a random key made on first use in a
 * database and stored in gdprcrm.database_keys wrapped under the root
 * key's derived key for that purpose, exactly like subject keys: a
 * rotation rewraps it (rotation.c, told how by database_keys_table), and
 * every blind index stays valid.  Being per database, blind indexes of
 * two databases cannot be linked.
 *
 * These keys never change once created, so a backend caches them for its
 * lifetime, except that one created by a transaction that rolls back is
 * forgotten.  The cache is a region of secret memory (secret_memory.c):
 * locked, out of core dumps, and not passed to children of fork(2).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "csprng.h"
#include "database_keys.h"
#include "owner_query.h"
#include "secret_memory.h"

typedef struct DatabaseKeySpec
{
	const char *name;			/* gdprcrm.database_keys.purpose */
	KeyPurpose	wrapped_by;		/* root-derived key that wraps it */
} DatabaseKeySpec;

static const DatabaseKeySpec specs[DATABASE_KEY_COUNT] = {
	[DATABASE_KEY_BLIND_INDEX] = {"blind_index", KEY_PURPOSE_BLIND_INDEX},
};

/* Allocated on first use: DATABASE_KEY_COUNT keys. */
static unsigned char (*cached_keys)[KEYRING_KEY_BYTES] = NULL;
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
 * The key table, gdprcrm.database_keys: one row per purpose, read and
 * written as the tables' owner (owner_query.c).
 */
#define KEY_TABLE GDPRCRM_SCHEMA ".database_keys"

/* Plans survive across calls; the plan cache re-plans them when needed. */
static SPIPlanPtr fetch_plan = NULL;
static SPIPlanPtr insert_plan = NULL;

/*
 * fetch_key_row
 *	  Read the key of a purpose in this database (latest snapshot).
 */
static bool
fetch_key_row(const char *purpose, StoredKey *out)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(purpose)};
	OwnerQuery	query;
	bool		found;

	owner_query_begin(&query);
	found = owner_query_read(owner_query_prepare(&fetch_plan,
												 "SELECT purpose, wrapped_key, wrapped_with"
												 " FROM " KEY_TABLE
												 " WHERE purpose OPERATOR(pg_catalog.=) $1",
												 1, types),
							 values, 1, KEY_TABLE) > 0;
	if (found)
		stored_key_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 0, 2, out);
	owner_query_end(&query);
	return found;
}

/*
 * insert_key_row
 *	  Insert the key of a purpose; false if another transaction won.
 */
static bool
insert_key_row(const char *purpose, const StoredKey *key)
{
	Oid			types[3] = {TEXTOID, BYTEAOID, TEXTOID};
	Datum		values[3];

	values[0] = CStringGetTextDatum(purpose);
	values[1] = stored_key_wrapped_datum(key);
	values[2] = CStringGetTextDatum(key->wrapped_with);
	return owner_query_execute(&insert_plan,
							   "INSERT INTO " KEY_TABLE
							   " (purpose, wrapped_key, wrapped_with)"
							   " VALUES ($1, $2, $3) ON CONFLICT (purpose) DO NOTHING",
							   3, types, values, SPI_OK_INSERT, KEY_TABLE) > 0;
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
	if (cached_keys == NULL)
		cached_keys = secret_memory_region(SECRET_AREA_DATABASE_KEYS,
										   DATABASE_KEY_COUNT * KEYRING_KEY_BYTES,
										   0);

	ad_len = database_key_ad(spec->name, ad, sizeof(ad));
	if (!fetch_key_row(spec->name, &row))
	{
		memset(&row, 0, sizeof(row));
		csprng_fill(cached_keys[purpose], KEYRING_KEY_BYTES);
		keyring_wrap(spec->wrapped_by, ad, ad_len, cached_keys[purpose], row.wrapped);
		strlcpy(row.wrapped_with, keyring_fingerprint(), sizeof(row.wrapped_with));
		PG_TRY();
		{
			if (insert_key_row(spec->name, &row))
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
		if (!fetch_key_row(spec->name, &row))
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
 * database_key_binding
 *	  For root key rotation: a database key is wrapped under its purpose's
 *	  root-derived key, bound to the purpose's name.
 */
static KeyPurpose
database_key_binding(Datum id, uint32 version pg_attribute_unused(),
					 unsigned char *ad, size_t *ad_len)
{
	const DatabaseKeySpec *spec = spec_by_name(TextDatumGetCString(id));

	*ad_len = database_key_ad(spec->name, ad, STORED_KEY_AD_MAX_BYTES);
	return spec->wrapped_by;
}

/*
 * database_keys_table
 *	  gdprcrm.database_keys for root key rotation (rotation.c): a handful
 *	  of keys, all done at once whatever the batch size.  They have one
 *	  version each.
 */
const StoredKeyTable database_keys_table = {
	.name = KEY_TABLE,
	.stale_sql = "SELECT purpose, 1, wrapped_key, wrapped_with"
	" FROM " KEY_TABLE
	" WHERE wrapped_with OPERATOR(pg_catalog.<>) $1"
	" FOR UPDATE",
	.rewrapped_sql = "UPDATE " KEY_TABLE
	" SET wrapped_key = $2, wrapped_with = $3"
	" WHERE purpose OPERATOR(pg_catalog.=) $1",
	.id_type = TEXTOID,
	.binding = database_key_binding,
};

static void
forget_all(void)
{
	if (cached_keys != NULL)
		sodium_memzero(cached_keys, DATABASE_KEY_COUNT * KEYRING_KEY_BYTES);
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
