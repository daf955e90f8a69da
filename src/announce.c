/*-------------------------------------------------------------------------
 * announce.c
 *	  Announcing consent, restriction and erasure changes on standbys.
 *
 * On the primary, a committed transaction that changed subjects' state or
 * destroyed keys tells every backend through shared memory (shmem.c).  A
 * hot standby's backends never see that: they would go on showing a
 * withdrawn subject and decrypting an erased one for as long as their
 * session lasts.  So the primary also writes the changed subjects to WAL,
 * in a record of gdprcrm's own resource manager, just before the commit
 * record.  The standby's startup process replays it into shared memory,
 * where the subjects wait until the transaction is known to have
 * committed (and are then announced like on the primary) or aborted (and
 * are dropped).  Backends settle what waits before their next decision
 * once replay has moved on, so a change counts on the standby from the
 * first decision after its commit was replayed, even within a statement.
 *
 * Writing the record before the commit, with the transaction id, is what
 * makes a crash harmless: if the primary dies between the two records, or
 * the commit fails after the record (a serialization failure found at
 * commit), the transaction never committed, and its announcement is
 * dropped once the standby learns it ended.  The record is written only when WAL is
 * kept for standbys (wal_level replica or logical); during crash or
 * archive recovery without hot standby nobody listens, and it is skipped.
 *
 * The resource manager needs gdprcrm in shared_preload_libraries wherever
 * this WAL is replayed: on every standby, and on the primary itself until
 * a checkpoint follows the last record (doc/operations.md).  A server that
 * does not preload gdprcrm has no such resource manager, so it writes no
 * record: recovery there could not replay one and the server would not
 * start again after a crash (and without shared memory no backend learns
 * of changes anyway).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "compat.h"
#ifdef COMPAT_HAS_CUSTOM_RMGR
#include "access/xlogrecovery.h"
#endif
#include "access/xlogutils.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "announce.h"
#include "shmem.h"

/*
 * gdprcrm's resource manager id, in the range PostgreSQL leaves to
 * extensions (128 to 255) and not used by any extension listed on the
 * PostgreSQL wiki's CustomWALResourceManagers page.
 */
#define GDPRCRM_RMGR_ID 186

#define XLOG_GDPRCRM_CHANGES 0x00

/* More subjects than this in one transaction: announce them all at once. */
#define MAX_LOGGED_SUBJECTS 8192

typedef struct xl_gdprcrm_changes
{
	TransactionId xid;			/* top-level transaction */
	Oid			db;
	bool		keys_destroyed;
	int32		count;			/* -1: every subject */
	/* int64 subjects[count] follow */
} xl_gdprcrm_changes;

#define SizeOfGdprcrmChanges (offsetof(xl_gdprcrm_changes, count) + sizeof(int32))

static bool rmgr_registered = false;	/* only while preloading */
static bool keys_destroyed_in_xact = false;
static TimestampTz settled_at_statement = 0;
static XLogRecPtr settled_at_replay = InvalidXLogRecPtr;

/*
 * announce_keys_destroyed
 *	  Note that the current transaction destroyed subject keys, so that its
 *	  record makes standbys drop their cached keys.
 */
void
announce_keys_destroyed(void)
{
	keys_destroyed_in_xact = true;
}

/*
 * announce_before_commit
 *	  Write the subjects the committing transaction changed to WAL (no
 *	  duplicates expected; SHMEM_ALL_SUBJECTS stands for all).  Called while
 *	  the transaction is about to commit, before its commit record.
 */
void
announce_before_commit(const int64 *subjects, int count)
{
	xl_gdprcrm_changes rec;
	TransactionId xid = GetTopTransactionIdIfAny();

#ifndef COMPAT_HAS_CUSTOM_RMGR
	return;
#endif
	if (!rmgr_registered || !XLogStandbyInfoActive() ||
		!TransactionIdIsValid(xid) || (count == 0 && !keys_destroyed_in_xact))
		return;

	memset(&rec, 0, sizeof(rec));	/* no stack bytes in the WAL */
	rec.xid = xid;
	rec.db = MyDatabaseId;
	rec.keys_destroyed = keys_destroyed_in_xact;
	rec.count = count > MAX_LOGGED_SUBJECTS ? -1 : count;

	XLogBeginInsert();
	XLogRegisterData((char *) &rec, SizeOfGdprcrmChanges);
	if (rec.count > 0)
		XLogRegisterData((char *) subjects, sizeof(int64) * rec.count);
	(void) XLogInsert(GDPRCRM_RMGR_ID, XLOG_GDPRCRM_CHANGES);
}

/*
 * announce_catch_up
 *	  Settle replayed changes whose transaction ended.  Costs one atomic
 *	  read when nothing waits.  While something waits, on a standby, each
 *	  call settles again once replay has moved on since this backend last
 *	  did (a commit can only have been replayed if replay moved), so a
 *	  long statement stops decrypting an erased subject at its next value;
 *	  while the primary is away and replay stands still, nothing is
 *	  rechecked.  Out of recovery (after a promotion), once per statement.
 */
void
announce_catch_up(void)
{
	if (!shmem_changes_awaiting())
		return;
	if (RecoveryInProgress())
	{
		XLogRecPtr	replayed = GetXLogReplayRecPtr(NULL);

		if (replayed == settled_at_replay)
			return;
		settled_at_replay = replayed;
		/* Every commit up to replayed is visible: settle for it, once. */
		shmem_settle_awaited((uint64) replayed);
	}
	else
	{
		TimestampTz statement = GetCurrentStatementStartTimestamp();

		if (statement == settled_at_statement)
			return;
		settled_at_statement = statement;
		shmem_settle_awaited(0);
	}
}

#ifdef COMPAT_HAS_CUSTOM_RMGR
static void
announce_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
	xl_gdprcrm_changes *rec = (xl_gdprcrm_changes *) XLogRecGetData(record);
	int64		all = SHMEM_ALL_SUBJECTS;

	if (info != XLOG_GDPRCRM_CHANGES)
		elog(PANIC, "gdprcrm redo: unknown record type %u", info);
	if (XLogRecGetDataLen(record) < SizeOfGdprcrmChanges ||
		XLogRecGetDataLen(record) != SizeOfGdprcrmChanges +
		sizeof(int64) * (rec->count > 0 ? rec->count : 0))
		elog(PANIC, "gdprcrm redo: record of %u bytes does not match its count",
			 XLogRecGetDataLen(record));

	/* Crash or archive recovery: no backend survives to be told. */
	if (standbyState == STANDBY_DISABLED)
		return;
	if (rec->count < 0)
		shmem_await_changes(rec->xid, rec->db, rec->keys_destroyed, &all, 1);
	else
		shmem_await_changes(rec->xid, rec->db, rec->keys_destroyed,
							(const int64 *) ((char *) rec + SizeOfGdprcrmChanges),
							rec->count);
}

/* Subject ids are left out: a WAL description may reach a log. */
static void
announce_desc(StringInfo buf, XLogReaderState *record)
{
	xl_gdprcrm_changes *rec = (xl_gdprcrm_changes *) XLogRecGetData(record);

	appendStringInfo(buf, "xid %u; db %u; subjects %d; keys destroyed %s",
					 rec->xid, rec->db, rec->count,
					 rec->keys_destroyed ? "yes" : "no");
}

static const char *
announce_identify(uint8 info)
{
	return (info & ~XLR_INFO_MASK) == XLOG_GDPRCRM_CHANGES ? "CHANGES" : NULL;
}

static RmgrData announce_rmgr = {
	.rm_name = "gdprcrm",
	.rm_redo = announce_redo,
	.rm_desc = announce_desc,
	.rm_identify = announce_identify,
};

#endif

static void
xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			keys_destroyed_in_xact = false;
			break;
		default:
			break;
	}
}

/*
 * announce_init
 *	  Register the resource manager (only while preloading: PostgreSQL
 *	  allows it nowhere else) and the transaction callback.
 */
void
announce_init(void)
{
#ifdef COMPAT_HAS_CUSTOM_RMGR
	if (process_shared_preload_libraries_in_progress)
	{
		RegisterCustomRmgr(GDPRCRM_RMGR_ID, &announce_rmgr);
		rmgr_registered = true;
	}
#endif
	RegisterXactCallback(xact_callback, NULL);
}
