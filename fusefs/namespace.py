"""Images as subdirectories of one FUSE mount, and the inode numbers that keep them apart.

Rules:
- inode 1 is the mount's root; it lists one directory per image, named by the image id, except in
  single-image mode (`lazyfly mount`), where inode 1 is that image's root directory;
- an image occupies slot s ≥ 1 and its local inode i (1 = its root) is exposed as s·2³² + i, so
  numbers are stable for the image's life, hard links keep one number, and nothing is stored;
- slots are never reused within a daemon's life, so an inode the kernel still caches from a
  removed image can only answer ENOENT, never another image's file.
"""

import re
from collections.abc import Iterator

from lazyfly.errors import InvalidArgument
from lazyfly.fusefs.errors import ImageExists, ImageNotFound
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.reader_pool import ReaderPool

ROOT_INODE = 1
SLOT_SHIFT = 32
LOCAL_MASK = (1 << SLOT_SHIFT) - 1
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Namespace:
    """The images currently served, by id and by slot."""

    def __init__(self, *, single: bool = False) -> None:
        self.single = single
        self.readers = ReaderPool()
        self._by_id: dict[str, MountedImage] = {}
        self._by_slot: dict[int, MountedImage] = {}
        self._next_slot = 1

    def to_global(self, slot: int, local: int) -> int:
        """The inode number the kernel sees for local inode `local` of the image in `slot`."""
        if self.single and (slot, local) == (1, ROOT_INODE):
            return ROOT_INODE
        return (slot << SLOT_SHIFT) | local

    def to_local(self, ino: int) -> tuple[int, int]:
        """(slot, local inode) of a kernel inode number; slot 0 is the list of images."""
        if self.single and ino == ROOT_INODE:
            return 1, ROOT_INODE
        return ino >> SLOT_SHIFT, ino & LOCAL_MASK

    def is_image_list(self, ino: int) -> bool:
        """True for the root directory that lists images (never in single-image mode)."""
        return ino == ROOT_INODE and not self.single

    def reserve_slot(self, image_id: str, slot: int = 0) -> int:
        """Check `image_id` and return the slot its image will take: `slot`, or the next free one."""
        if not _IMAGE_ID.match(image_id):
            raise InvalidArgument(f"image id {image_id!r}: use letters, digits, '.', '_', '-' (≤ 128)")
        if image_id in self._by_id or (self.single and self._next_slot > 1):
            raise ImageExists(f"image {image_id} is mounted already, or this mount holds one image")
        if slot:
            if slot in self._by_slot:
                raise ImageExists(f"image {image_id}: slot {slot} is taken")
        else:
            slot = self._next_slot
        self._next_slot = max(self._next_slot, slot + 1)
        return slot

    def add(self, image: MountedImage) -> None:
        """Serve `image` (its slot from reserve_slot)."""
        if image.image_id in self._by_id:
            raise ImageExists(f"image {image.image_id} is mounted already")
        if image.slot in self._by_slot:
            raise ImageExists(f"image {image.image_id}: slot {image.slot} is taken")
        self._by_id[image.image_id] = image
        self._by_slot[image.slot] = image

    def remove(self, image_id: str) -> MountedImage:
        """Stop serving `image_id` and return it (the caller closes it)."""
        image = self._by_id.pop(image_id, None)
        if image is None:
            raise ImageNotFound(f"image {image_id} is not mounted")
        del self._by_slot[image.slot]
        return image

    def by_id(self, image_id: str) -> MountedImage | None:
        """The image named `image_id`, if served."""
        return self._by_id.get(image_id)

    def by_slot(self, slot: int) -> MountedImage | None:
        """The image in `slot`, if served."""
        return self._by_slot.get(slot)

    def __iter__(self) -> Iterator[MountedImage]:
        return iter(sorted(self._by_id.values(), key=lambda image: image.image_id))

    def __len__(self) -> int:
        return len(self._by_id)
