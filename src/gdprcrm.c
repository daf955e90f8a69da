/*-------------------------------------------------------------------------
 * gdprcrm.c
 *	  Module magic and _PG_init.
 *
 * _PG_init only decides the order in which the modules start; each module
 * keeps its own state and documents its own start-up.  Settings come first
 * because the keyring reads gdprcrm.key_command while the postmaster loads
 * shared_preload_libraries.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "announce.h"
#include "database_keys.h"
#include "guc.h"
#include "keyring.h"
#include "secret_memory.h"
#include "shmem.h"
#include "subject_keys.h"
#include "subject_state.h"
#include "team.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/*
	 * pg_upgrade runs both clusters in binary-upgrade mode, preloading
	 * gdprcrm as their postgresql.conf says, and loads it once more to see
	 * that it exists.  It moves catalogs and data files and calls no gdprcrm
	 * function, so nothing starts: no key command runs (and no development
	 * key file is made under a new key in the new cluster), no shared memory,
	 * WAL resource manager, hook or callback is registered, and gdprcrm.*
	 * lines in postgresql.conf stay placeholders, which PostgreSQL accepts
	 * without a warning.  Called anyway, a function that needs a key fails
	 * with 55000, and row filters hide every row (no purpose is declared).
	 * Functions that need no key (consent, shred_subject_key) still change
	 * their tables, but no other backend is told: harmless there, since only
	 * pg_upgrade's own superuser sessions run until the server restarts.
	 */
	if (IsBinaryUpgrade)
		return;

	secret_memory_init();
	guc_init();
	keyring_init();
	shmem_init();
	announce_init();
	/* Transaction callbacks run newest first: the key module's go first. */
	subject_state_init();
	subject_keys_init();
	database_keys_init();
	team_init();
}
