/*-------------------------------------------------------------------------
 * store.h
 *	  gdprcrm's key and team tables, read and written as their owner (store.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_STORE_H
#define GDPRCRM_STORE_H

#include "keyring.h"

/* One row of gdprcrm.subject_keys or gdprcrm.database_keys. */
typedef struct StoredKey
{
	uint32		version;
	bool		destroyed;		/* a tombstone: the key is gone for good */
	unsigned char wrapped[KEYRING_WRAPPED_BYTES];
	char		wrapped_with[KEYRING_FINGERPRINT_CHARS + 1];
} StoredKey;

/*
 * Called by store_rewrap_subject_keys for each key wrapped under another
 * root key: fill new_wrapped with the key wrapped under the current one.
 */
typedef void (*RewrapSubjectKey) (int64 subject, const StoredKey *old,
								  unsigned char *new_wrapped);
typedef void (*RewrapDatabaseKey) (const char *purpose, const StoredKey *old,
								   unsigned char *new_wrapped);

typedef void (*PurposeRowFn) (const char *name, int bit, const char *lawful_basis,
							 bool allowed_when_restricted, void *arg);
typedef void (*StateRowFn) (int64 subject, uint64 consented, uint64 objected,
							bool restricted, bool erased, void *arg);

extern void store_scan_purposes(PurposeRowFn fn, void *arg);
extern void store_scan_subject_states(const int64 *subjects, int count,
									  StateRowFn fn, void *arg);
extern bool store_fetch_subject_key(int64 subject, StoredKey *out, int64 *project);
extern bool store_insert_subject_key(int64 subject, const StoredKey *key);
extern int	store_insert_subject_keys(const int64 *subjects, const StoredKey *keys,
									  int count, bool *inserted);
extern bool store_destroy_subject_key(int64 subject);
extern bool store_fetch_database_key(const char *purpose, StoredKey *out);
extern bool store_insert_database_key(const char *purpose, const StoredKey *key);
extern int64 store_rewrap_subject_keys(int limit, RewrapSubjectKey rewrap);
extern int64 store_rewrap_database_keys(RewrapDatabaseKey rewrap);
extern int64 *store_team_projects(Oid role, int *count, Oid *members_relid);
extern int64 *store_all_projects(int *count);
extern void store_forget_member(Oid role);

#endif							/* GDPRCRM_STORE_H */
