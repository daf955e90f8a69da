/*-------------------------------------------------------------------------
 * rotation.c
 *	  Root key rotation: wrapping every stored key again under a new root
 *	  key.
 *
 * A rotation never re-encrypts data.  The server starts with the new root
 * key (gdprcrm.key_command) and the old one (gdprcrm.previous_key_command);
 * gdprcrm.rewrap_keys() then unwraps each key wrapped under the old root
 * key and wraps it again under the new one, table by table, a batch at a
 * time, until it returns 0 and the old key can go.
 *
 * Each key table is described by the module that owns it (a
 * StoredKeyTable: its SQL and how its keys are bound), so one loop serves
 * all of them.  The unwrapped key lives on the stack for one row and is
 * zeroed before the next.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "database_keys.h"
#include "keyring.h"
#include "owner_query.h"
#include "secret_memory.h"
#include "stored_key.h"
#include "subject_keys.h"

/* Database keys first: a handful, done whatever the batch size. */
static const StoredKeyTable *const key_tables[] = {
	&database_keys_table,
	&subject_keys_table,
};

/*
 * rewrap
 *	  Replace key's wrapped bytes by the same key wrapped under the current
 *	  root key, as the key of id in table.
 */
static void
rewrap(const StoredKeyTable *table, Datum id, StoredKey *key)
{
	unsigned char *plain = secret_memory_alloc(CurrentMemoryContext, KEYRING_KEY_BYTES);
	unsigned char ad[STORED_KEY_AD_MAX_BYTES];
	size_t		ad_len;
	KeyPurpose	purpose = table->binding(id, key->version, ad, &ad_len);

	/* On error, the reset of the memory context zeroes plain. */
	keyring_unwrap(purpose, key->wrapped_with, ad, ad_len,
				   key->wrapped, sizeof(key->wrapped), plain);
	keyring_wrap(purpose, ad, ad_len, plain, key->wrapped);
	secret_memory_free(plain);
	strlcpy(key->wrapped_with, keyring_fingerprint(), sizeof(key->wrapped_with));
}

/*
 * rewrap_table
 *	  Wrap again, under the current root key, up to limit keys of table
 *	  that are wrapped under another one, as the tables' owner.  Returns
 *	  how many were rewrapped.
 */
static int64
rewrap_table(const StoredKeyTable *table, int limit)
{
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	Oid			update_types[3] = {table->id_type, BYTEAOID, TEXTOID};
	OwnerQuery	query;
	SPITupleTable *rows;
	uint64		nrows;

	values[0] = CStringGetTextDatum(keyring_fingerprint());
	values[1] = Int32GetDatum(limit);

	owner_query_begin(&query);
	if (SPI_execute_with_args(table->stale_sql, 2, types, values, NULL,
							  false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read %s", table->name);
	rows = SPI_tuptable;
	nrows = SPI_processed;

	for (uint64 i = 0; i < nrows; i++)
	{
		Datum		update_values[3];
		bool		isnull;
		StoredKey	key;

		update_values[0] = SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull);
		stored_key_from_row(rows->vals[i], rows->tupdesc, 2, 3, &key);
		rewrap(table, update_values[0], &key);
		update_values[1] = stored_key_wrapped_datum(&key);
		update_values[2] = CStringGetTextDatum(key.wrapped_with);
		if (SPI_execute_with_args(table->rewrapped_sql, 3, update_types,
								  update_values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not write %s", table->name);
	}
	owner_query_end(&query);
	return (int64) nrows;
}

/*
 * gdprcrm.rewrap_keys(batch_size integer) -> bigint
 *	  During a root key rotation: wrap again under the current root key up
 *	  to batch_size subject keys (and every database key) still wrapped
 *	  under the previous one.  Rows locked by others are left for the next
 *	  call.  Returns how many it rewrapped; call until 0.  Data are never
 *	  re-encrypted.
 */
PG_FUNCTION_INFO_V1(gdprcrm_rewrap_keys);
Datum
gdprcrm_rewrap_keys(PG_FUNCTION_ARGS)
{
	int32		batch_size = PG_GETARG_INT32(0);
	int64		done = 0;

	if (batch_size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch size must be positive")));
	(void) keyring_fingerprint();	/* errors without preload */

	for (size_t i = 0; i < lengthof(key_tables); i++)
		done += rewrap_table(key_tables[i], batch_size);
	PG_RETURN_INT64(done);
}
