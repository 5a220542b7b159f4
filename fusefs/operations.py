"""The pyfuse3 Operations of the lazyfly mount: a read-only POSIX view of every served image.

This module only translates: kernel requests to namespace and image calls, inode records to
attributes, and error categories to errno, here and nowhere else (Corrupt, Unavailable and
FailedPrecondition → EIO, NotFound → ENOENT). Rules: images never change, so entries and
attributes of image inodes carry long timeouts and files open with keep_cache, and a name missing
from an image directory is answered as a negative entry (inode 0) with the same timeout, so that
the kernel remembers it (a program starting looks for many files that are not there, the dynamic
loader and Python's import system above all, and again in every container of the image); the
root lists images, which come and go, so its own timeouts are short and a missing image is
ENOENT. `.` and `..` are emitted by readdir
(pyfuse3 does not add them).
"""

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator

import pyfuse3

from lazyfly.errors import Corrupt, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from lazyfly.format.layout import Inode
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.namespace import ROOT_INODE, Namespace

log = logging.getLogger(__name__)

IMAGE_TIMEOUT = 86400.0  # images are immutable
ROOT_TIMEOUT = 1.0  # the list of images changes
BLOCK_SIZE = 4096


def _absent() -> pyfuse3.EntryAttributes:
    """A negative entry: the kernel answers ENOENT for the name until the timeout, by itself."""
    attrs = pyfuse3.EntryAttributes()
    attrs.st_ino = 0
    attrs.entry_timeout = IMAGE_TIMEOUT
    return attrs


@contextlib.contextmanager
def _errno() -> Iterator[None]:
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except NotFound as exc:
        raise pyfuse3.FUSEError(errno.ENOENT) from exc
    except InvalidArgument as exc:
        raise pyfuse3.FUSEError(errno.EINVAL) from exc
    except (Corrupt, Unavailable, FailedPrecondition) as exc:
        # FailedPrecondition: the image was removed while this request was under way.
        log.error("read failed: %s", exc)
        raise pyfuse3.FUSEError(errno.EIO) from exc


class LazyOperations(pyfuse3.Operations):
    """Serves the images of `namespace`."""

    supports_dot_lookup = False

    def __init__(self, namespace: Namespace) -> None:
        super().__init__()
        self.namespace = namespace

    # --- resolution ----------------------------------------------------------------------------

    def _image_inode(self, ino: int) -> tuple[MountedImage, Inode]:
        slot, local = self.namespace.to_local(ino)
        image = self.namespace.by_slot(slot)
        if image is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        with _errno():
            return image, image.metadata.inode(local)

    def _root_attrs(self) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = ROOT_INODE
        attrs.st_mode = stat.S_IFDIR | 0o755
        attrs.st_nlink = 2 + len(self.namespace)
        attrs.st_blksize = BLOCK_SIZE
        attrs.entry_timeout = attrs.attr_timeout = ROOT_TIMEOUT
        return attrs

    def _attrs(self, image: MountedImage, inode: Inode) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = self.namespace.to_global(image.slot, inode.ino)
        attrs.generation = 0
        attrs.entry_timeout = attrs.attr_timeout = IMAGE_TIMEOUT
        attrs.st_mode = inode.mode
        attrs.st_nlink = inode.nlink
        attrs.st_uid = inode.uid
        attrs.st_gid = inode.gid
        attrs.st_rdev = inode.rdev
        attrs.st_size = inode.size
        attrs.st_blksize = BLOCK_SIZE
        attrs.st_blocks = inode.blocks
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = inode.mtime_ns
        return attrs

    def _attrs_of(self, ino: int) -> pyfuse3.EntryAttributes:
        if self.namespace.is_image_list(ino):
            return self._root_attrs()
        return self._attrs(*self._image_inode(ino))

    # --- metadata ------------------------------------------------------------------------------

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        """Attributes of `inode`."""
        return self._attrs_of(inode)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        """Find `name` in directory `parent_inode`."""
        if self.namespace.is_image_list(parent_inode):
            image = self.namespace.by_id(os.fsdecode(name))
            if image is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            with _errno():
                return self._attrs(image, image.bootstrap.inode(image.bootstrap.root_ino))
        image, parent = self._image_inode(parent_inode)
        if not stat.S_ISDIR(parent.mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        with _errno():
            found = image.bootstrap.lookup(parent, name)
            if found is None:
                return _absent()
            return self._attrs(image, image.metadata.inode(found))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        """Directories are read by inode number: the handle is the inode."""
        if not self.namespace.is_image_list(inode):
            _, node = self._image_inode(inode)
            if not stat.S_ISDIR(node.mode):
                raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """List `.`, `..` and the entries of directory `fh`, resuming at `start_id`."""
        for next_id, name, attrs in self._listing(fh, start_id):
            if not pyfuse3.readdir_reply(token, name, attrs, next_id):
                return

    def _listing(self, ino: int, start: int) -> Iterator[tuple[int, bytes, pyfuse3.EntryAttributes]]:
        if self.namespace.is_image_list(ino):
            dots = [(b".", self._root_attrs()), (b"..", self._root_attrs())]
            for i, (name, attrs) in enumerate(dots[start:], start):
                yield i + 1, name, attrs
            images = list(self.namespace)
            for i, image in enumerate(images[max(0, start - 2) :], max(2, start)):
                root = image.bootstrap.inode(image.bootstrap.root_ino)
                yield i + 1, image.image_id.encode(), self._attrs(image, root)
            return
        image, node = self._image_inode(ino)
        with _errno():
            if node.ino != image.bootstrap.root_ino:
                parent = self._attrs(image, image.bootstrap.inode(node.parent))
            elif self.namespace.single:
                parent = self._attrs(image, node)
            else:
                parent = self._root_attrs()
            dots = [(b".", self._attrs(image, node)), (b"..", parent)]
            for i, (name, attrs) in enumerate(dots[start:], start):
                yield i + 1, name, attrs
            for i, (name, child, _) in enumerate(
                image.bootstrap.entries(node, max(0, start - 2)), max(2, start)
            ):
                yield i + 1, name, self._attrs(image, image.bootstrap.inode(child))

    async def releasedir(self, fh: int) -> None:
        """Nothing to release: the handle is the inode."""

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        """Target of a symlink."""
        image, node = self._image_inode(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        with _errno():
            return image.bootstrap.readlink(node)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        """One extended attribute."""
        if self.namespace.is_image_list(inode):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        image, node = self._image_inode(inode)
        with _errno():
            value = image.bootstrap.xattrs(node).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        """Names of the extended attributes."""
        if self.namespace.is_image_list(inode):
            return []
        image, node = self._image_inode(inode)
        with _errno():
            return list(image.bootstrap.xattrs(node))

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """A read-only filesystem whose size is what its images hold."""
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        used = sum(blob.uncompressed_size for image in self.namespace for blob in image.bootstrap.blobs())
        data.f_blocks = -(-used // BLOCK_SIZE)
        data.f_bfree = data.f_bavail = 0
        inodes = sum(image.bootstrap.inode_count for image in self.namespace) + 1
        data.f_files = inodes
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # --- file content --------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """Open a regular file read-only; the handle is the inode."""
        _, node = self._image_inode(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if not stat.S_ISREG(node.mode):
            raise pyfuse3.FUSEError(errno.EISDIR if stat.S_ISDIR(node.mode) else errno.EINVAL)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray | memoryview:
        """Bytes of an open file; chunks are fetched, verified and cached as needed."""
        image, node = self._image_inode(fh)
        with _errno():
            return await image.read(node, off, size)

    async def release(self, fh: int) -> None:
        """Nothing to release: the handle is the inode."""
