/*-------------------------------------------------------------------------
 * stored_key.c
 *	  A wrapped key as gdprcrm's key tables store it.
 *
 * Both key tables keep a key as the bytes keyring_wrap produced
 * (wrapped_key bytea) and the fingerprint of the root key it was wrapped
 * under (wrapped_with text, beside it); a NULL wrapped key is a tombstone.
 * The modules that own the tables (subject_keys.c, database_keys.c)
 * convert their rows here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "compat.h"
#include "stored_key.h"

/*
 * stored_key_from_row
 *	  Fill out from a key row: version in column version_col (0: there is
 *	  none, version 1), wrapped key in wrapped_col and the wrapping root
 *	  key's fingerprint in the column after it.  Errors on a malformed key.
 */
void
stored_key_from_row(HeapTuple row, TupleDesc desc, int version_col, int wrapped_col,
					StoredKey *out)
{
	bool		isnull;
	Datum		d;

	memset(out, 0, sizeof(*out));
	out->version = version_col > 0 ?
		DatumGetInt32(SPI_getbinval(row, desc, version_col, &isnull)) : 1;
	d = SPI_getbinval(row, desc, wrapped_col, &isnull);
	out->destroyed = isnull;
	if (!isnull)
	{
		bytea	   *wrapped = DatumGetByteaPP(d);
		char	   *with = SPI_getvalue(row, desc, wrapped_col + 1);

		if (VARSIZE_ANY_EXHDR(wrapped) != KEYRING_WRAPPED_BYTES ||
			with == NULL || strlen(with) != KEYRING_FINGERPRINT_CHARS)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("a stored gdprcrm key is malformed")));
		memcpy(out->wrapped, VARDATA_ANY(wrapped), KEYRING_WRAPPED_BYTES);
		memcpy(out->wrapped_with, with, KEYRING_FINGERPRINT_CHARS + 1);
	}
}

/*
 * stored_key_wrapped_datum
 *	  The wrapped key as a bytea datum, palloc'd, for a query parameter.
 */
Datum
stored_key_wrapped_datum(const StoredKey *key)
{
	bytea	   *b = palloc(VARHDRSZ + KEYRING_WRAPPED_BYTES);

	SET_VARSIZE(b, VARHDRSZ + KEYRING_WRAPPED_BYTES);
	memcpy(VARDATA(b), key->wrapped, KEYRING_WRAPPED_BYTES);
	return PointerGetDatum(b);
}
