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

#include "announce.h"
#include "consent.h"
#include "database_keys.h"
#include "guc.h"
#include "keyring.h"
#include "shmem.h"
#include "subject_keys.h"
#include "team.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	guc_init();
	keyring_init();
	shmem_init();
	announce_init();
	/* Transaction callbacks run newest first: the key module's go first. */
	consent_init();
	subject_keys_init();
	database_keys_init();
	team_init();
}
