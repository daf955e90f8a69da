/*-------------------------------------------------------------------------
 * stored_key.h
 *	  A wrapped key as gdprcrm's key tables store it, and what root key
 *	  rotation needs to know of each key table (stored_key.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_STORED_KEY_H
#define GDPRCRM_STORED_KEY_H

#include "access/htup.h"
#include "access/tupdesc.h"

#include "keyring.h"

/* A row of a key table (gdprcrm.subject_keys, gdprcrm.database_keys). */
typedef struct StoredKey
{
	uint32		version;
	bool		destroyed;		/* a tombstone: the key is gone for good */
	unsigned char wrapped[KEYRING_WRAPPED_BYTES];
	char		wrapped_with[KEYRING_FINGERPRINT_CHARS + 1];
} StoredKey;

/* The most associated data any wrapped key is bound to. */
#define STORED_KEY_AD_MAX_BYTES 64

/*
 * A key table as root key rotation (rotation.c) sees it; each key module
 * describes its own.  Keys are identified by one column of type id_type.
 */
typedef struct StoredKeyTable
{
	const char *name;			/* schema-qualified, for messages */

	/*
	 * Lock and return keys wrapped under another root key than $1 (text),
	 * at most $2 (integer) of them where the table is large: columns id,
	 * key version, wrapped key, wrapped_with.
	 */
	const char *stale_sql;

	/* Store the key of id $1 wrapped again: $2 (bytea) under $3 (text). */
	const char *rewrapped_sql;

	Oid			id_type;

	/*
	 * The purpose key that wraps the key of id at version, and the
	 * associated data it is bound to, written to ad (at most
	 * STORED_KEY_AD_MAX_BYTES), whose length goes to *ad_len.
	 */
	KeyPurpose	(*binding) (Datum id, uint32 version, unsigned char *ad,
							size_t *ad_len);
} StoredKeyTable;

extern void stored_key_from_row(HeapTuple row, TupleDesc desc, int version_col,
								int wrapped_col, StoredKey *out);
extern Datum stored_key_wrapped_datum(const StoredKey *key);

#endif							/* GDPRCRM_STORED_KEY_H */
