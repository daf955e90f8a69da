/*-------------------------------------------------------------------------
 * compat.h
 *	  The one place where PostgreSQL major versions differ for gdprcrm.
 *
 * gdprcrm is tested on PostgreSQL 15 and written to compile on 14 to 17.
 * Any call whose name or header moved between those versions goes through
 * a macro here, so the rest of the code is version-free.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_COMPAT_H
#define GDPRCRM_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 140000 || PG_VERSION_NUM >= 180000
#error "gdprcrm supports PostgreSQL 14 to 17"
#endif

/* PostgreSQL 16 moved the varlena macros out of postgres.h. */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * PostgreSQL 15 renamed the call that claims a settings prefix, so that
 * unknown gdprcrm.* names are rejected rather than kept as placeholders.
 */
#if PG_VERSION_NUM >= 150000
#define compat_reserve_guc_prefix(prefix) MarkGUCPrefixReserved(prefix)
#else
#define compat_reserve_guc_prefix(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * PostgreSQL 15 added shmem_request_hook and requires shared memory to be
 * requested from it; 14 takes the request directly in _PG_init.
 */
#if PG_VERSION_NUM >= 150000
#define COMPAT_HAS_SHMEM_REQUEST_HOOK 1
#endif

/*
 * PostgreSQL 15 added custom WAL resource managers, which announce.c needs
 * to tell standbys of changes; on 14 standbys are not told (doc/security.md).
 */
#if PG_VERSION_NUM >= 150000
#define COMPAT_HAS_CUSTOM_RMGR
#endif

#endif							/* GDPRCRM_COMPAT_H */
