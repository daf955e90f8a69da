/*-------------------------------------------------------------------------
 * guc.c
 *	  Every gdprcrm.* setting, with its purpose, context and default.
 *
 * Each setting is documented here and in doc/reference.md.  Modules read
 * the C variables declared in guc.h; nothing else defines a setting.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "miscadmin.h"
#include "datatype/timestamp.h"
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

/*
 * gdprcrm.previous_key_command (postmaster, superuser only, default empty).
 *
 * Set only while rotating the root key: prints the old key, so that keys
 * wrapped under it can be unwrapped and wrapped again under the new one
 * (gdprcrm.rewrap_keys).  Never used to encrypt.
 */
char	   *gdprcrm_previous_key_command = NULL;

/*
 * gdprcrm.cipher (user, default xchacha20poly1305).
 *
 * The AEAD for values encrypted from now on; every envelope records its
 * own cipher, so changing it never affects existing values.  AES-256-GCM
 * is offered only where the CPU has AES instructions.
 */
int			gdprcrm_cipher = ENVELOPE_CIPHER_XCHACHA20POLY1305;

static const struct config_enum_entry cipher_options[] = {
	{"xchacha20poly1305", ENVELOPE_CIPHER_XCHACHA20POLY1305, false},
	{"aes256gcm", ENVELOPE_CIPHER_AES256GCM, false},
	{NULL, 0, false}
};

/*
 * gdprcrm.key_cache_size (superuser, default 131072).
 *
 * How many unwrapped subject data keys a backend keeps; CLOCK eviction
 * (keys not used since the hand last passed go first), zeroed.  About 100
 * bytes each.  Superuser only: the setting sizes memory of the backend,
 * up to about 1.6 GB at its maximum, and no ordinary role may choose that.
 */
int			gdprcrm_key_cache_size = 131072;

/*
 * gdprcrm.strict_erasure (user, default off).
 *
 * Off: a value whose subject's key was destroyed decrypts to NULL, so a
 * scan over a table where some subjects were erased still succeeds.  On:
 * such a value raises an error instead.
 */
bool		gdprcrm_strict_erasure = false;

/*
 * gdprcrm.trash_retention (superuser, default 30 days).
 *
 * How long a subject moved to the trash by gdprcrm.erase_subject() stays
 * restorable: gdprcrm.restore_subject() refuses once it has been in the
 * trash longer, and gdprcrm.expired_trash() lists it for purging.  An
 * integer of seconds with time units ('30d', '12h'), read by the erasure
 * functions in SQL as an interval.  Superuser only: an application that
 * lengthened it for its own session could restore what should be gone.
 */
int			gdprcrm_trash_retention = 30 * SECS_PER_DAY;

/*
 * gdprcrm.special_category_keys (superuser, default: the GDPR Art. 9 and 10
 * categories in common spellings).
 *
 * Object keys in CRM properties that name one of these terms, word by
 * word, are refused.  Only superusers may change it, so an application
 * cannot switch the guard off for its own session.
 */
#define DEFAULT_SPECIAL_CATEGORY_KEYS \
	"health,medical,diagnosis,medication,prescription,disability,illness,pregnancy," \
	"racial_origin,race,ethnicity,ethnic_origin,religion,religious_belief,faith," \
	"philosophical_belief,political_opinion,political_party,politics," \
	"trade_union,union_membership,genetic,dna,biometric,face_template," \
	"sex_life,sexual_orientation,sexuality,criminal_record,criminal_offence,conviction"

char	   *gdprcrm_special_category_keys = NULL;

/*
 * gdprcrm.purpose (user, default empty).
 *
 * Why this session, or with SET LOCAL this transaction, processes personal
 * data.  Protected tables show a subject's rows only when this purpose is
 * lawful for the subject; empty shows none.
 */
char	   *gdprcrm_purpose = NULL;

/*
 * Bumped whenever gdprcrm.purpose is assigned (SET, RESET, SET LOCAL, the
 * end of a transaction restoring it), so the row filter resolves the
 * purpose again only then instead of comparing its name on every row.
 */
uint64		gdprcrm_purpose_generation = 0;

static void
assign_purpose(const char *newval pg_attribute_unused(), void *extra pg_attribute_unused())
{
	gdprcrm_purpose_generation++;
}

static void define_postmaster_settings(void);
static bool check_cipher(int *newval, void **extra, GucSource source);

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

	DefineCustomEnumVariable("gdprcrm.cipher",
							 "AEAD cipher for newly encrypted values.",
							 "xchacha20poly1305 everywhere; aes256gcm where the CPU has AES instructions. "
							 "Existing values keep the cipher they were written with.",
							 &gdprcrm_cipher,
							 ENVELOPE_CIPHER_XCHACHA20POLY1305,
							 cipher_options,
							 PGC_USERSET,
							 0,
							 check_cipher, NULL, NULL);

	DefineCustomIntVariable("gdprcrm.key_cache_size",
							"Most subject data keys one backend keeps unwrapped.",
							"When it is full, a key not used since the eviction sweep last passed it is evicted and zeroed.",
							&gdprcrm_key_cache_size,
							131072,
							1,
							16 * 1024 * 1024,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("gdprcrm.strict_erasure",
							 "Raise an error, instead of returning NULL, when decrypting a value of an erased subject.",
							 NULL,
							 &gdprcrm_strict_erasure,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("gdprcrm.trash_retention",
							"How long a subject erased to the trash stays restorable.",
							"gdprcrm.restore_subject() refuses a subject in the trash for longer; "
							"gdprcrm.expired_trash() lists it for purging.",
							&gdprcrm_trash_retention,
							30 * SECS_PER_DAY,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("gdprcrm.purpose",
							   "Purpose of processing declared by this session or transaction.",
							   "Rows of protected tables are visible only when the purpose is lawful for their subject. "
							   "Use SET LOCAL (or gdprcrm.set_purpose) behind a transaction-pooling connection pooler.",
							   &gdprcrm_purpose,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, assign_purpose, NULL);

	DefineCustomStringVariable("gdprcrm.special_category_keys",
							   "Comma-separated terms whose appearance as a key in CRM properties is refused.",
							   "Matched word by word: \"health\" refuses healthStatus and health_notes, not healthy.",
							   &gdprcrm_special_category_keys,
							   DEFAULT_SPECIAL_CATEGORY_KEYS,
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

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

	DefineCustomStringVariable("gdprcrm.previous_key_command",
							   "During a root key rotation, shell command that prints the old root key.",
							   "Keys wrapped under it are unwrapped and wrapped again under the current key by gdprcrm.rewrap_keys().",
							   &gdprcrm_previous_key_command,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
}

/*
 * check_cipher
 *	  Refuse AES-256-GCM on a CPU without AES instructions, where libsodium
 *	  does not implement it.
 */
static bool
check_cipher(int *newval, void **extra pg_attribute_unused(), GucSource source pg_attribute_unused())
{
	if (*newval == ENVELOPE_CIPHER_AES256GCM)
	{
		if (sodium_init() < 0 || !crypto_aead_aes256gcm_is_available())
		{
			GUC_check_errcode(ERRCODE_FEATURE_NOT_SUPPORTED);
			GUC_check_errdetail("This CPU has no AES instructions, which AES-256-GCM needs here.");
			GUC_check_errhint("Use gdprcrm.cipher = xchacha20poly1305.");
			return false;
		}
	}
	return true;
}
