"""Public datasets: download with hash checks, iterate image/label pairs.

VesselNN (Teikari, Santos, Poon, Hynynen, arXiv:1606.02382, 2016) holds six two-photon volumes of
mouse brain and tumour vasculature with dense expert labels. The files live in the GitHub
repository ``petteriTeikari/vesselNN_dataset``: BM4D-denoised stacks under ``denoised/`` and labels
under ``labels/``. :func:`fetch_vesselnn` stores them as ``images/<name>.tif`` and
``labels/<name>.tif`` and checks every file's SHA256 hash.

The download address is :data:`VESSELNN_URL`; set the environment variable
``NAPARI_VESSEL_VESSELNN_URL`` (or pass ``source=``) to use a mirror with the same layout, or a
local folder laid out either like the repository or like the result of :func:`fetch_vesselnn`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_replace
from napari_vessel.progress import Progress, no_progress

__all__ = ["DatasetFile", "VESSELNN", "VESSELNN_URL", "vesselnn_names", "fetch_vesselnn",
           "iter_pairs"]

#: Raw-file address of the repository's default branch; files sit under ``denoised/``, ``labels/``.
VESSELNN_URL = "https://raw.githubusercontent.com/petteriTeikari/vesselNN_dataset/HEAD/"


@dataclass(frozen=True)
class DatasetFile:
    """One file of a dataset.

    Parameters
    ----------
    name : str
        Volume name, shared by the image and its label.
    kind : {"image", "label"}
        Whether this is the microscopy stack or its annotation.
    remote : str
        Path inside the source repository.
    sha256 : str
        Expected SHA256 hash (hex) of the file.
    """

    name: str
    kind: str
    remote: str
    sha256: str

    @property
    def local(self) -> str:
        """Where the file goes under the destination folder."""
        return f"{'images' if self.kind == 'image' else 'labels'}/{self.name}.tif"


def _pair(name: str, image_hash: str, label_file: str, label_hash: str) -> tuple[DatasetFile, ...]:
    return (DatasetFile(name, "image", f"denoised/{name}_BM4D_denoised.tif", image_hash),
            DatasetFile(name, "label", f"labels/{label_file}", label_hash))


#: The six annotated VesselNN volumes (images are uint8; labels are 0 and 255, or 254).
VESSELNN: tuple[DatasetFile, ...] = (
    *_pair("burgess2014_bbbDisruption",
           "e12e9baa0f57a805a35a44004a80520f226152dcd0ba410b2dc9baa49211d62c",
           "burgess2014_bbbDisruption_labels_v1.tif",
           "fd36946ac45ceaa96ea87647b9658d6102444222011aa90ece88e48472a0b430"),
    *_pair("burgess2014_noisySparseVessels",
           "6d377f01063d8e46608b5b3b4cc2949069e80e3ffb68f5b175f3700ec23f2f33",
           "burgess2014_noisySparseVessels_labels_v1.tif",
           "9d055adaf0be6c5ab5da46da84b279474190fddc3817ae638e902fe01c8c9c74"),
    *_pair("burgess2014_tgMouse",
           "6c9682c18582c1714d9ae11281f9e6582b8fb0d43d1fbb222a844d608ca442a4",
           "burgess2014_tgMouse_labels_v1.tif",
           "07c5e4c911c68e421fd38a3df1f229fcf3bce2e99edaf679a6211acd9ae1c015"),
    *_pair("poon2015_BBB_Leakage",
           "a97daff50015878482f8accdf8e61116002a35e03539cca0d2c2a48eac2eccf5",
           "poon2015_BBB_Leakage_manualLabels_v2.tif",
           "50935bbde93e3d027c4f654f5a502f5452305864aba8d349a596d141539761a7"),
    *_pair("poon2015_plaqueVessels",
           "819d7b497e25cdebe8418f7e8b009af2aaeb3a1081f278d8f2eebb52b172984d",
           "poon2015_plaqueVessels_label_underSegmented.tif",
           "3179b3c0589c03b8a68c626acd4c81b4dd883c8445eb5ceee16af7d519911d39"),
    *_pair("santos2015_lowContrastVessels",
           "10432f3ae30c16fc1478dd6744553ca0bfd82093e073c37bb553c9149dd4d1fd",
           "santos2015_lowContrastVessels_labelsMarc.tif",
           "116eb3f98b3a0dea4c5db31cf5988987bf12123c8f812c9b061437602039344d"),
)


def vesselnn_names() -> list[str]:
    """Names of the VesselNN volumes, in table order."""
    return list(dict.fromkeys(f.name for f in VESSELNN))


def fetch_vesselnn(dest: str | os.PathLike, *, source: str | os.PathLike | None = None,
                   names: Sequence[str] | None = None, progress: Progress | None = None) -> Path:
    """Download (or copy) the VesselNN volumes into ``dest``, checking each file's SHA256 hash.

    Parameters
    ----------
    dest : str or PathLike
        Folder to fill with ``images/<name>.tif`` and ``labels/<name>.tif`` (created if needed).
        Files already there with the right hash are kept.
    source : str or PathLike, optional
        Where to get the files: a base URL laid out like the repository (``http(s)://`` or
        ``file://``) or a local folder laid out like the repository or like ``dest``.
        Default: ``$NAPARI_VESSEL_VESSELNN_URL`` or :data:`VESSELNN_URL`.
    names : sequence of str, optional
        Fetch only these volumes (see :func:`vesselnn_names`); default all six.
    progress : callable, optional
        ``progress(fraction, message)``, called once per file.

    Returns
    -------
    Path
        ``dest``; pass it to :func:`iter_pairs`.

    Raises
    ------
    InputError
        Unknown name, missing source file, failed download or a hash that does not match.
    """
    progress = progress or no_progress
    dest = Path(dest).expanduser()
    files = _select(names)
    source = source if source is not None else os.environ.get("NAPARI_VESSEL_VESSELNN_URL",
                                                              VESSELNN_URL)
    folder = _as_folder(source)
    if folder is None and not str(source).startswith(("http://", "https://", "ftp://")):
        raise InputError(f"source {source} is neither a folder nor an http(s)/file URL")
    for done, item in enumerate(files):
        progress(done / len(files), f"{item.local}")
        target = dest / item.local
        target.parent.mkdir(parents=True, exist_ok=True)
        if folder is not None:
            _copy_checked(item, folder, target)
        else:
            _download_checked(item, str(source), target)
    progress(1.0, "done")
    return dest


def _select(names: Sequence[str] | None) -> list[DatasetFile]:
    if names is None:
        return list(VESSELNN)
    known = vesselnn_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown VesselNN volume {unknown[0]!r}; choose from {', '.join(known)}")
    return [f for f in VESSELNN if f.name in names]


def _as_folder(source: str | os.PathLike) -> Path | None:
    """The local folder meant by ``source`` (a path or a file:// URL), else None."""
    text = os.fspath(source)
    if text.startswith("file://"):
        folder = Path(url2pathname(unquote(urlparse(text).path)))
    elif "://" in text:
        return None
    else:
        folder = Path(text).expanduser()
    if not folder.is_dir():
        raise InputError(f"source folder {folder} does not exist")
    return folder


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _hash_error(item: DatasetFile, where: str, found: str) -> InputError:
    return InputError(
        f"{item.local} from {where} has SHA256 {found[:12]}... but {item.sha256[:12]}... was "
        "expected: the file is damaged or not the published one; delete it and fetch again")


def _copy_checked(item: DatasetFile, folder: Path, target: Path) -> None:
    if target.is_file() and _sha256(target) == item.sha256:
        return
    found = next((folder / p for p in (item.local, item.remote) if (folder / p).is_file()), None)
    if found is None:
        raise InputError(f"{item.name} ({item.kind}) is not in {folder}: looked for "
                         f"{item.local} and {item.remote}")
    with atomic_replace(target) as tmp:  # a damaged copy already there is replaced
        shutil.copyfile(found, tmp)
        digest = _sha256(tmp)
        if digest != item.sha256:
            raise _hash_error(item, str(found), digest)


def _download_checked(item: DatasetFile, base: str, target: Path) -> None:
    import pooch

    url = base.rstrip("/") + "/" + item.remote
    try:
        pooch.retrieve(url, known_hash=f"sha256:{item.sha256}", fname=target.name,
                       path=target.parent, progressbar=False)
    except ValueError as err:  # pooch reports a hash mismatch as ValueError
        if "hash" in str(err).lower():
            raise InputError(f"{item.local} downloaded from {url} failed the SHA256 check; "
                             "the download was damaged or the file changed upstream") from err
        raise InputError(f"cannot download {url}: {err}") from err
    except Exception as err:  # network errors come from requests/urllib in many types
        raise InputError(f"cannot download {url} ({type(err).__name__}: {err}); check the "
                         "internet connection, or pass --source with a local copy") from err


def iter_pairs(folder: str | os.PathLike) -> Iterator[tuple[str, Path, Path]]:
    """Yield ``(name, image_path, label_path)`` for each image with a label of the same name.

    Parameters
    ----------
    folder : str or PathLike
        A folder with ``images/`` and ``labels/`` subfolders of ``.tif`` files, such as the one
        :func:`fetch_vesselnn` fills.
    """
    folder = Path(folder).expanduser()
    if not (folder / "images").is_dir() or not (folder / "labels").is_dir():
        raise InputError(f"{folder} has no images/ and labels/ folders; fill it with "
                         "'napari-vessel data --dest FOLDER'")
    for image in sorted((folder / "images").glob("*.tif")):
        label = folder / "labels" / image.name
        if label.is_file():
            yield image.stem, image, label
