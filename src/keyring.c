/*-------------------------------------------------------------------------
 * keyring.c
 *	  Root key loading, purpose key derivation and locked key memory.
 *
 * The postmaster loads the 256-bit root key once, while it processes
 * shared_preload_libraries: from the output of gdprcrm.key_command, or,
 * when that is empty, from a development key file in the data directory
 * that is created on first start.  The root key and the keys derived from
 * it live in one region of secret memory (secret_memory.c) that is locked,
 * excluded from core dumps, guarded and read-only once filled; backends
 * inherit it by fork.  The text of the key, while it is read, and the
 * fingerprint's key are transient buffers of secret memory too.
 *
 * Nothing here ever returns key bytes to SQL, and no message carries the
 * key or the output of the key command.  The only SQL-visible facts are a
 * keyed fingerprint, the source and the load time (gdprcrm.key_info).
 *
 * Without shared_preload_libraries no key is ever loaded, and every caller
 * of keyring_purpose_key gets ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "csprng.h"
#include "guc.h"
#include "keyring.h"
#include "secret_memory.h"

/* The development key file, relative to the data directory. */
#define DEV_KEY_FILE		"gdprcrm_dev_root.key"
#define DEV_KEY_TEMP_FILE	DEV_KEY_FILE ".tmp"

/* A key in text: 64 hex digits; a newline after them is allowed. */
#define KEY_HEX_CHARS		(2 * KEYRING_KEY_BYTES)

/* More output than this from the key command is certainly not a key. */
#define KEY_OUTPUT_MAX		4096

/* Output past KEY_OUTPUT_MAX is read into this much, and zeroed. */
#define KEY_DISCARD_BYTES	512

/*
 * The development key file's text: written as the hex digits and a newline
 * (sodium_bin2hex needs room for its NUL), read with room to notice more.
 */
#define DEV_KEY_HEX_BYTES	(KEY_HEX_CHARS + 2)
#define DEV_KEY_TEXT_BYTES	(KEY_HEX_CHARS + 3)

#define FINGERPRINT_BYTES	(KEYRING_FINGERPRINT_CHARS / 2)

typedef enum KeySource
{
	KEY_SOURCE_NONE,
	KEY_SOURCE_COMMAND,
	KEY_SOURCE_DEVELOPMENT_FILE
} KeySource;

/*
 * Everything secret, in one locked region.  libsodium derivation
 * contexts are exactly eight bytes; changing one changes every key derived
 * for that purpose, so they are part of the storage format.
 */
typedef struct RootKeys
{
	unsigned char root[KEYRING_KEY_BYTES];
	unsigned char purpose[KEY_PURPOSE_COUNT][KEYRING_KEY_BYTES];
} RootKeys;

/*
 * The current root key, and during a rotation the previous one, which is
 * only ever used to unwrap keys so that they can be wrapped again.
 */
typedef struct KeyringSecrets
{
	RootKeys	current;
	RootKeys	previous;
} KeyringSecrets;

static const char *const purpose_contexts[KEY_PURPOSE_COUNT] = {
	[KEY_PURPOSE_WRAP] = "gdprwrap",
	[KEY_PURPOSE_BLIND_INDEX] = "gdprbidx",
	[KEY_PURPOSE_PSEUDONYM] = "gdprpsdn",
	[KEY_PURPOSE_AUDIT] = "gdpraudt",
};

#define FINGERPRINT_CONTEXT "gdprfprt"
#define KEY_DERIVATION_VERSION 1

static KeyringSecrets *secrets = NULL;
static bool has_previous = false;
static KeySource key_source = KEY_SOURCE_NONE;
static TimestampTz key_loaded_at = 0;
static char key_fingerprint[KEYRING_FINGERPRINT_CHARS + 1];
static char previous_fingerprint[KEYRING_FINGERPRINT_CHARS + 1];

/*
 * parse_key_text
 *	  Decode 64 hex digits, optionally followed by "\n" or "\r\n", into
 *	  root.  Returns false, leaving root unspecified, for anything else.
 */
static bool
parse_key_text(const char *text, size_t len, unsigned char *root)
{
	size_t		bin_len = 0;
	const char *end = NULL;

	if (len > 0 && text[len - 1] == '\n')
		len--;
	if (len > 0 && text[len - 1] == '\r')
		len--;
	if (len != KEY_HEX_CHARS)
		return false;
	if (sodium_hex2bin(root, KEYRING_KEY_BYTES, text, len,
					   NULL, &bin_len, &end) != 0)
		return false;
	return bin_len == KEYRING_KEY_BYTES && end == text + len;
}

/*
 * read_key_from_command
 *	  Run gdprcrm.key_command and decode what it prints into root.  Any
 *	  failure is FATAL, because a server must not run with a key other than
 *	  the one it was told to use.  The output is read with read(2) rather
 *	  than stdio so that no copy of it stays in a stdio buffer, into secret
 *	  memory that is zeroed before any message is raised.
 */
static void
read_key_from_command(const char *setting, const char *command,
					  unsigned char *root)
{
	char	   *output;
	char	   *discard;
	size_t		len = 0;
	size_t		total = 0;
	FILE	   *pipe;
	int			status;
	bool		valid;

	fflush(NULL);
	pipe = OpenPipeStream(command, "r");
	if (pipe == NULL)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not run %s: %m", setting)));

	output = secret_memory_alloc(CurrentMemoryContext,
								 KEY_OUTPUT_MAX + KEY_DISCARD_BYTES);
	discard = output + KEY_OUTPUT_MAX;
	for (;;)
	{
		ssize_t		got;

		/* Past the limit keep draining, so the command is not killed. */
		if (len < KEY_OUTPUT_MAX)
			got = read(fileno(pipe), output + len, KEY_OUTPUT_MAX - len);
		else
			got = read(fileno(pipe), discard, KEY_DISCARD_BYTES);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		if (len < KEY_OUTPUT_MAX)
			len += got;
		else
			sodium_memzero(discard, KEY_DISCARD_BYTES);
		total += got;
	}
	status = ClosePipeStream(pipe);

	valid = status == 0 && total == len && parse_key_text(output, len, root);
	secret_memory_free(output);

	if (status != 0)
	{
		sodium_memzero(root, KEYRING_KEY_BYTES);
		ereport(FATAL,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("%s failed", setting),
				 errdetail("The command's %s. Its output is not shown.",
						   wait_result_to_str(status)),
				 errhint("Fix the command so that it exits with status 0.")));
	}
	if (!valid)
	{
		sodium_memzero(root, KEYRING_KEY_BYTES);
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("%s did not print a valid root key", setting),
				 errdetail("It printed %zu bytes; a root key is exactly 64 hexadecimal characters, optionally followed by a newline. The output is not shown.",
						   total)));
	}
}

/*
 * create_dev_key_file
 *	  Generate a random root key and store it, in hex, as the development
 *	  key file.  It is written to a temporary file with mode 0600, synced
 *	  and renamed into place, so a crash leaves either no file or a whole
 *	  one, never a truncated key.
 */
static void
create_dev_key_file(unsigned char *root)
{
	char	   *hex = secret_memory_alloc(CurrentMemoryContext, DEV_KEY_HEX_BYTES);
	int			fd;
	ssize_t		written;

	randombytes_buf(root, KEYRING_KEY_BYTES);
	sodium_bin2hex(hex, DEV_KEY_HEX_BYTES, root, KEYRING_KEY_BYTES);
	hex[KEY_HEX_CHARS] = '\n';

	fd = open(DEV_KEY_TEMP_FILE, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
			  S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		secret_memory_free(hex);
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", DEV_KEY_TEMP_FILE)));
	}
	written = write(fd, hex, KEY_HEX_CHARS + 1);
	secret_memory_free(hex);
	if (written != KEY_HEX_CHARS + 1)
	{
		if (written >= 0)
			errno = ENOSPC;
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", DEV_KEY_TEMP_FILE)));
	}
	if (pg_fsync(fd) != 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", DEV_KEY_TEMP_FILE)));
	if (close(fd) != 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", DEV_KEY_TEMP_FILE)));

	durable_rename(DEV_KEY_TEMP_FILE, DEV_KEY_FILE, FATAL);
}

/*
 * read_dev_key_file
 *	  Load the development key file, creating it on first start.  A file
 *	  that others could read, or that does not hold exactly one key, stops
 *	  the server: silently replacing it would make existing data unreadable.
 */
static void
read_dev_key_file(unsigned char *root)
{
	char	   *text;
	struct stat st;
	ssize_t		len;
	bool		valid;
	int			fd;

	fd = open(DEV_KEY_FILE, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
	{
		if (errno != ENOENT)
			ereport(FATAL,
					(errcode_for_file_access(),
					 errmsg("could not open file \"%s\": %m", DEV_KEY_FILE)));
		create_dev_key_file(root);
		ereport(LOG,
				(errmsg("gdprcrm created a development root key in file \"%s\"",
						DEV_KEY_FILE)));
		return;
	}

	if (fstat(fd, &st) != 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", DEV_KEY_FILE)));
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		ereport(FATAL,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("development key file \"%s\" is not a regular file private to its owner",
						DEV_KEY_FILE),
				 errhint("The file must have mode 0600, for example: chmod 0600 \"%s/%s\".",
						 DataDir, DEV_KEY_FILE)));

	text = secret_memory_alloc(CurrentMemoryContext, DEV_KEY_TEXT_BYTES);
	do
		len = read(fd, text, DEV_KEY_TEXT_BYTES);
	while (len < 0 && errno == EINTR);
	close(fd);
	if (len < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", DEV_KEY_FILE)));

	valid = parse_key_text(text, (size_t) len, root);
	secret_memory_free(text);
	if (!valid)
	{
		sodium_memzero(root, KEYRING_KEY_BYTES);
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("development key file \"%s\" does not hold a valid root key",
						DEV_KEY_FILE),
				 errdetail("The file must contain exactly 64 hexadecimal characters, optionally followed by a newline. Its content is not shown."),
				 errhint("Restore the file from backup; replacing it makes every value encrypted under it unreadable.")));
	}
}

/*
 * derive_keys
 *	  Fill every purpose key and the public fingerprint from the root key.
 *	  The fingerprint is a keyed hash under its own derived key, so it
 *	  identifies the root key without revealing any byte of it.
 */
static void
derive_keys(RootKeys *s, char *fingerprint_hex)
{
	static const char fingerprint_message[] = "gdprcrm root key fingerprint";
	unsigned char *fingerprint_key;
	unsigned char fingerprint[FINGERPRINT_BYTES];

	for (int p = 0; p < KEY_PURPOSE_COUNT; p++)
		crypto_kdf_derive_from_key(s->purpose[p], KEYRING_KEY_BYTES,
								   KEY_DERIVATION_VERSION,
								   purpose_contexts[p], s->root);

	fingerprint_key = secret_memory_alloc(CurrentMemoryContext,
										  KEYRING_KEY_BYTES);
	crypto_kdf_derive_from_key(fingerprint_key, KEYRING_KEY_BYTES,
							   KEY_DERIVATION_VERSION,
							   FINGERPRINT_CONTEXT, s->root);
	crypto_generichash(fingerprint, sizeof(fingerprint),
					   (const unsigned char *) fingerprint_message,
					   sizeof(fingerprint_message) - 1,
					   fingerprint_key, KEYRING_KEY_BYTES);
	secret_memory_free(fingerprint_key);
	sodium_bin2hex(fingerprint_hex, KEYRING_FINGERPRINT_CHARS + 1,
				   fingerprint, sizeof(fingerprint));
}

/*
 * keyring_init
 *	  Initialise libsodium in every process that loads gdprcrm, and, in the
 *	  postmaster while it processes shared_preload_libraries, load the root
 *	  key.  Every failure to load is FATAL: the server does not start.
 *
 *	  fork(2) does not pass memory locks on; secret_memory.c locks the keys
 *	  again in every child, which shares the postmaster's pages and never
 *	  writes them (they are read-only).  MADV_DONTDUMP is inherited.
 *
 *	  EXEC_BACKEND builds re-run _PG_init in every backend and would run the
 *	  key command each time; they are not supported.
 */
void
keyring_init(void)
{
	KeyringSecrets *s;

	if (sodium_init() < 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not initialise libsodium")));

	if (!process_shared_preload_libraries_in_progress || secrets != NULL)
		return;

	s = secret_memory_region(SECRET_AREA_ROOT_KEYS, sizeof(KeyringSecrets),
							 SECRET_INHERITED | SECRET_MUST_LOCK);
	if (s == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate locked memory for the gdprcrm keys: %m"),
				 errhint("Raise the locked-memory limit of the server (ulimit -l) to at least 64 kB.")));

	if (gdprcrm_key_command != NULL && gdprcrm_key_command[0] != '\0')
	{
		read_key_from_command("gdprcrm.key_command", gdprcrm_key_command,
							  s->current.root);
		key_source = KEY_SOURCE_COMMAND;
	}
	else
	{
		read_dev_key_file(s->current.root);
		key_source = KEY_SOURCE_DEVELOPMENT_FILE;
		ereport(WARNING,
				(errmsg("gdprcrm is using a development root key, which is not for production"),
				 errdetail("The key is stored unencrypted in file \"%s\" of the data directory.",
						   DEV_KEY_FILE),
				 errhint("Set gdprcrm.key_command to a command that prints the root key from a key management service.")));
	}

	derive_keys(&s->current, key_fingerprint);

	if (gdprcrm_previous_key_command != NULL &&
		gdprcrm_previous_key_command[0] != '\0')
	{
		read_key_from_command("gdprcrm.previous_key_command",
							  gdprcrm_previous_key_command, s->previous.root);
		derive_keys(&s->previous, previous_fingerprint);
		if (strcmp(previous_fingerprint, key_fingerprint) == 0)
			ereport(WARNING,
					(errmsg("gdprcrm.previous_key_command prints the current root key"),
					 errhint("During a rotation it must print the old key, and gdprcrm.key_command the new one.")));
		else
		{
			has_previous = true;
			ereport(LOG,
					(errmsg("gdprcrm loaded a previous root key for rotation"),
					 errhint("Run SELECT gdprcrm.rewrap_keys() until it returns 0, then remove gdprcrm.previous_key_command.")));
		}
	}
	else
		sodium_memzero(&s->previous, sizeof(s->previous));

	if (!secret_memory_protect_readonly(s))
		ereport(FATAL,
				(errmsg("could not protect the gdprcrm keys: %m")));

	secrets = s;
	key_loaded_at = GetCurrentTimestamp();
}

/*
 * keyring_is_loaded
 *	  True when this process inherited a root key from the postmaster.
 */
bool
keyring_is_loaded(void)
{
	return secrets != NULL;
}

/*
 * require_keyring
 *	  Raise the error every key-using function gives without preload.
 */
static void
require_keyring(void)
{
	/* Preloaded, but pg_upgrade's servers load no key (gdprcrm.c). */
	if (secrets == NULL && IsBinaryUpgrade)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm keys are not loaded in binary-upgrade mode"),
				 errdetail("While pg_upgrade runs the server, gdprcrm loads no key."),
				 errhint("Use gdprcrm once the server is started normally.")));
	if (secrets == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gdprcrm keys are not loaded"),
				 errdetail("The root key is read only when the server starts with gdprcrm preloaded."),
				 errhint("Add gdprcrm to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * keyring_purpose_key
 *	  The derived key of one purpose: KEYRING_KEY_BYTES bytes in read-only
 *	  locked memory owned by the keyring.  Callers must not copy it into
 *	  memory they do not zero.  Errors when no key was loaded.
 */
const unsigned char *
keyring_purpose_key(KeyPurpose purpose)
{
	Assert(purpose >= 0 && purpose < KEY_PURPOSE_COUNT);
	require_keyring();
	return secrets->current.purpose[purpose];
}

/*
 * keyring_fingerprint
 *	  Fingerprint of the current root key: KEYRING_FINGERPRINT_CHARS hex
 *	  digits in static storage.  Errors when no key was loaded.
 */
const char *
keyring_fingerprint(void)
{
	require_keyring();
	return key_fingerprint;
}

/*
 * keyring_previous_fingerprint
 *	  Fingerprint of the previous root key during a rotation, else NULL.
 */
const char *
keyring_previous_fingerprint(void)
{
	require_keyring();
	return has_previous ? previous_fingerprint : NULL;
}

/*
 * purpose_key_for
 *	  The purpose key under the root key with the given fingerprint: the
 *	  current one, the previous one during a rotation, or NULL.
 */
static const unsigned char *
purpose_key_for(KeyPurpose purpose, const char *fingerprint)
{
	require_keyring();
	if (strcmp(fingerprint, key_fingerprint) == 0)
		return secrets->current.purpose[purpose];
	if (has_previous && strcmp(fingerprint, previous_fingerprint) == 0)
		return secrets->previous.purpose[purpose];
	return NULL;
}

/*
 * keyring_wrap
 *	  Encrypt a KEYRING_KEY_BYTES working key under the current purpose key
 *	  into wrapped (KEYRING_WRAPPED_BYTES: nonce, ciphertext, tag), bound to
 *	  ad.  The caller stores keyring_fingerprint() beside it.
 */
void
keyring_wrap(KeyPurpose purpose, const unsigned char *ad, size_t ad_len,
			 const unsigned char *key, unsigned char *wrapped)
{
	unsigned char *nonce = wrapped;

	csprng_fill(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
											   NULL, key, KEYRING_KEY_BYTES,
											   ad, ad_len, NULL, nonce,
											   keyring_purpose_key(purpose));
}

/*
 * keyring_unwrap
 *	  Reverse keyring_wrap for a key wrapped under the root key with the
 *	  given fingerprint.  Errors, naming neither key nor owner, when that
 *	  root key is not loaded or the wrapped bytes fail authentication.
 */
void
keyring_unwrap(KeyPurpose purpose, const char *fingerprint,
			   const unsigned char *ad, size_t ad_len,
			   const unsigned char *wrapped, size_t wrapped_len,
			   unsigned char *key)
{
	const unsigned char *purpose_key = purpose_key_for(purpose, fingerprint);

	if (purpose_key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a gdprcrm data key is wrapped by a root key that is not loaded"),
				 errdetail("Values were written under another root key; compare gdprcrm.key_info() with the fingerprint recorded for them."),
				 errhint("Start the server with the root key these data were written under; during a rotation set gdprcrm.previous_key_command to the old key.")));

	if (wrapped_len != KEYRING_WRAPPED_BYTES ||
		crypto_aead_xchacha20poly1305_ietf_decrypt(key, NULL, NULL,
												   wrapped + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
												   wrapped_len - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
												   ad, ad_len, wrapped,
												   purpose_key) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not unwrap a gdprcrm data key"),
				 errdetail("The stored wrapped key was altered or belongs to another owner.")));
}

/*
 * gdprcrm.key_info() -> (fingerprint text, source text, loaded_at timestamptz)
 *	  What an operator may know about the root key: a keyed fingerprint to
 *	  compare servers and backups, where it came from and when.
 */
PG_FUNCTION_INFO_V1(gdprcrm_key_info);
Datum
gdprcrm_key_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	require_keyring();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	values[0] = CStringGetTextDatum(key_fingerprint);
	values[1] = CStringGetTextDatum(key_source == KEY_SOURCE_COMMAND ?
									"command" : "development_file");
	values[2] = TimestampTzGetDatum(key_loaded_at);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}
