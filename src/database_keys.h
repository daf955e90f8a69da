/*-------------------------------------------------------------------------
 * database_keys.h
 *	  Random per-database keys for blind indexes and pseudonyms
 *	  (database_keys.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_DATABASE_KEYS_H
#define GDPRCRM_DATABASE_KEYS_H

#include "keyring.h"
#include "stored_key.h"

typedef enum DatabaseKeyPurpose
{
	DATABASE_KEY_BLIND_INDEX,
	DATABASE_KEY_COUNT
} DatabaseKeyPurpose;

extern void database_keys_init(void);
extern const unsigned char *database_keys_get(DatabaseKeyPurpose purpose);

/* gdprcrm.database_keys, for root key rotation. */
extern const StoredKeyTable database_keys_table;

#endif							/* GDPRCRM_DATABASE_KEYS_H */
