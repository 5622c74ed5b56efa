/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private: opening data files through zlib (plain or gzip, transparently)
 * with the error reporting both data readers share. */
#ifndef NN_GZIO_H
#define NN_GZIO_H

#include <stdint.h>

#include <zlib.h>

#include <nn/plugin.h>

/* Open path for gzread with a read buffer of buffer_size bytes (a hint).
 * Missing file -> NN_ENOTFOUND, other open failures -> NN_EIO, zlib's own
 * allocation failure -> NN_ENOMEM; the message names the file.  When
 * file_size is not NULL it receives the size of the file on disk (the
 * compressed size for a .gz), for bounding what a header may claim. */
int nn__gz_open(gzFile *out, const char *path, unsigned buffer_size,
                uint64_t *file_size, nn_error *err);
/* The most bytes gzread can deliver from a file of file_size bytes: as
 * many for a plain file (direct set), and for gzip data deflate's largest
 * expansion, 1032 output bytes per input byte (a 258-byte match coded in
 * 2 bits), whatever the members and headers.  Saturates at UINT64_MAX. */
uint64_t nn__gz_max_output(uint64_t file_size, int direct);
/* zlib's message for path without the "path: " zlib puts in front. */
const char *nn__gz_reason(const char *zmsg, const char *path);
/* After gzread returned < 0: the error, with its code (read error ->
 * NN_EIO, zlib out of memory -> NN_ENOMEM, corrupt data -> NN_EFORMAT).
 * `where` starts the corrupt-data message (the path, or "path:line"). */
int nn__gz_read_error(gzFile f, const char *path, const char *where,
                      nn_error *err);
/* 1 if zlib ended a read at a gzip stream that is cut short (it reports
 * that as a plain end of file). */
int nn__gz_cut_short(gzFile f);

#endif
