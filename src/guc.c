/*-------------------------------------------------------------------------
 * guc.c
 *	  Every gdprcrm.* setting, with its purpose, context and default.
 *
 * Each setting is documented here and in doc/reference.md.  Modules read
 * the C variables declared in guc.h; nothing else defines a setting.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "compat.h"
#include "guc.h"

/*
 * gdprcrm.key_command (postmaster, superuser only, default empty).
 *
 * A shell command run once when the postmaster loads gdprcrm; it must
 * print the 256-bit root key as 64 hexadecimal characters.  Empty selects
 * the development key file in the data directory.  The setting holds a
 * command, never a key, and only superusers may read it because the
 * command line can name a vault path or token file.
 */
char	   *gdprcrm_key_command = NULL;

static void define_postmaster_settings(void);

/*
 * guc_init
 *	  Define every gdprcrm.* setting.  Called from _PG_init in any process
 *	  that loads the library.  PostgreSQL refuses to create postmaster
 *	  settings once the server runs, so those exist only when gdprcrm is
 *	  preloaded, which is also the only time they are read.
 */
void
guc_init(void)
{
	if (process_shared_preload_libraries_in_progress)
		define_postmaster_settings();

	compat_reserve_guc_prefix("gdprcrm");
}

/*
 * define_postmaster_settings
 *	  Settings fixed for the life of the server.
 */
static void
define_postmaster_settings(void)
{
	DefineCustomStringVariable("gdprcrm.key_command",
							   "Shell command that prints the gdprcrm root key at server start.",
							   "It must print 64 hexadecimal characters (256 bits). "
							   "Empty uses a development key file in the data directory.",
							   &gdprcrm_key_command,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
}
