"""Provenance evidence carried in a media file: C2PA manifests and the metadata generators write.

What counts as evidence that a file is AI-generated:

* a C2PA manifest whose signature and hashes validate (the signer need not be on a trust list:
  the claim is bound to these exact bytes, and it is a claim against the file's own authenticity)
  with an action or assertion declaring IPTC digital source type ``trainedAlgorithmicMedia`` or
  ``compositeWithTrainedAlgorithmicMedia``;
* generator metadata: Stable Diffusion web UI ``parameters`` and ComfyUI ``prompt``/``workflow``
  text chunks, an XMP ``DigitalSourceType`` of those types, EXIF ``Software`` naming a generator.

A tampered, remote-only or unreadable manifest is recorded as such and never counts. Camera
capture metadata (make, model, exposure) is recorded as weak evidence only: any tool can write
it. Absence of everything changes nothing. Training never reads any of this (frames are pixels).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import BinaryIO

from pipeline.media.sniff import SNIFF_BYTES, sniff_format

AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
GENERATOR_SOFTWARE = re.compile(
    r"\b(stable[ -]?diffusion|midjourney|dall[-·]?e|firefly|novelai|comfyui|automatic1111|invokeai|fooocus|"
    r"leonardo\.ai|ideogram|runwayml|flux\.1)\b",
    re.IGNORECASE,
)
_XMP_START, _XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
_XMP_MAX_BYTES, _XMP_MAX_PACKETS = 1 << 20, 16  # bounded work on hostile files that repeat the opening tag
_CHUNK_BYTES = 8 << 20  # files are scanned for XMP this much at a time
_XMP_SOURCE_TYPE = re.compile(rb"DigitalSourceType(?:\s*=\s*\"|>|\s+rdf:resource\s*=\s*\")([^\"<]+)")
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif", "tiff": "image/tiff",
         "heic": "image/heic", "heif": "image/heif", "avif": "image/avif", "iso-bmff": "video/mp4",
         "avi": "video/avi"}  # fmt: skip
_EXIF_SOFTWARE, _EXIF_MAKE, _EXIF_MODEL, _EXIF_IFD, _EXIF_USER_COMMENT = 0x0131, 0x010F, 0x0110, 0x8769, 0x9286
_EXPOSURE_TAGS = {0x829A: "exposure_time", 0x829D: "f_number", 0x8827: "iso", 0x9003: "taken_at"}
_MAX_TEXT = 300  # characters kept of any metadata value (prompts can be long)


@dataclass
class Provenance:
    """What a file says about its own origin."""

    c2pa: dict = field(default_factory=lambda: {"state": "absent"})
    generator: list[str] = field(default_factory=list)  # generator metadata found, in words
    camera: dict | None = None  # weak evidence only: recorded, never decides

    @property
    def declares_ai(self) -> bool:
        return bool(self.evidence())

    def evidence(self) -> list[str]:
        """Each piece of evidence that the file is AI-generated, in words."""
        found = []
        if self.c2pa["state"] == "valid" and self.c2pa.get("ai_source_types"):
            signer = self.c2pa.get("signer") or "an unnamed signer"
            trust = "on a trust list" if self.c2pa.get("trusted") else "not on a trust list"
            found.append(
                f"C2PA manifest signed by {signer} ({trust}) declares {', '.join(self.c2pa['ai_source_types'])}"
            )
        return found + self.generator

    def to_dict(self) -> dict:
        return {**asdict(self), "declares_ai": self.declares_ai, "evidence": self.evidence()}


def read_provenance(source: bytes | Path) -> Provenance:
    """Read every provenance record in a file's bytes or in a file; never raises for malformed metadata.

    A file is read in chunks, so a long video is never held in memory whole.
    """
    if isinstance(source, bytes):
        return _provenance(source[:SNIFF_BYTES], io.BytesIO(source), [source], image=lambda: source)
    with source.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
        handle.seek(0)
        return _provenance(head, handle, _windows(source), image=source.read_bytes)


def _provenance(head: bytes, stream: BinaryIO, windows: Iterable[bytes], *, image: Callable[[], bytes]) -> Provenance:
    container = sniff_format(head)
    provenance = Provenance(c2pa=read_c2pa(stream, container))
    provenance.generator = _xmp_source_types(windows)
    if _MIME.get(container, "").startswith("image/"):
        generator, provenance.camera = _image_metadata(image())
        provenance.generator += generator
    return provenance


def _windows(path: Path) -> Iterator[bytes]:
    """A file as overlapping chunks, so that a packet across a chunk boundary is still found whole."""
    with path.open("rb") as handle:
        window = handle.read(_CHUNK_BYTES + _XMP_MAX_BYTES)
        while window:
            yield window
            more = handle.read(_CHUNK_BYTES)
            if not more:
                return
            window = window[-_XMP_MAX_BYTES:] + more


@cache
def _c2pa_context():
    import c2pa

    # Offline and deterministic: a manifest stored elsewhere is not fetched, certificates are not checked online.
    return c2pa.Context(c2pa.Settings.from_dict({"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}))


def read_c2pa(data: bytes | BinaryIO, container: str) -> dict:
    """The active C2PA manifest's claim and validation, as ``state`` ``valid``, ``invalid``,
    ``unverifiable`` (remote or unreadable), ``absent`` or ``unsupported`` plus what it says."""
    import c2pa

    mime = _MIME.get(container)
    if mime is None:
        return {"state": "unsupported", "format": container}
    try:
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        reader = c2pa.Reader(mime, stream, context=_c2pa_context())
        store = json.loads(reader.json())
    except c2pa.C2paError as error:
        message = str(error)
        if "ManifestNotFound" in type(error).__name__ or message.startswith("ManifestNotFound"):
            return {"state": "absent"}
        if message.startswith("Remote"):
            return {"state": "unverifiable", "error": "the manifest is stored remotely and was not fetched",
                    "remote_url": message.rsplit(" ", 1)[-1]}  # fmt: skip
        return {"state": "unverifiable", "error": message[:_MAX_TEXT]}
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    validation = store.get("validation_state", "Invalid")
    source_types = sorted({value.rsplit("/", 1)[-1] for value in _values_of(manifest.get("assertions", []),
                                                                             "digitalSourceType")})  # fmt: skip
    signature = manifest.get("signature_info") or {}
    return {
        "state": "valid" if validation in ("Valid", "Trusted") else "invalid",
        "validation_state": validation,
        "trusted": validation == "Trusted",
        "status_codes": sorted({s["code"] for s in store.get("validation_status", [])}),
        "claim_generator": manifest.get("claim_generator")
        or ", ".join(g.get("name", "") for g in manifest.get("claim_generator_info", [])),
        "signer": signature.get("common_name") or signature.get("issuer"),
        "issuer": signature.get("issuer"),
        "signed_at": signature.get("time"),
        "actions": [a.get("action") for a in _values_of(manifest.get("assertions", []), "actions", flatten=True)],
        "digital_source_types": source_types,
        "ai_source_types": [t for t in source_types if t in AI_SOURCE_TYPES],
    }


def _values_of(node, key: str, *, flatten: bool = False) -> list:
    """Every value stored under ``key`` anywhere in a JSON tree (lists joined when ``flatten``)."""
    found = []
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                found += value if flatten and isinstance(value, list) else [value]
            else:
                found += _values_of(value, key, flatten=flatten)
    elif isinstance(node, list):
        for value in node:
            found += _values_of(value, key, flatten=flatten)
    return [v for v in found if v is not None]


def _xmp_source_types(windows: Iterable[bytes]) -> list[str]:
    """AI digital source types declared in XMP packets (JPEG, PNG, WebP, MP4 and others embed them)."""
    found = set()
    for data in windows:
        start = data.find(_XMP_START)
        for _ in range(_XMP_MAX_PACKETS):
            if start < 0:
                break
            end = data.find(_XMP_END, start, start + _XMP_MAX_BYTES)
            packet = data[start : end if end >= 0 else start + _XMP_MAX_BYTES]
            start = data.find(_XMP_START, start + len(_XMP_START))
            for value in _XMP_SOURCE_TYPE.findall(packet):
                source_type = value.decode("utf-8", "replace").strip().rsplit("/", 1)[-1]
                if source_type in AI_SOURCE_TYPES:
                    found.add(f"XMP DigitalSourceType declares {source_type}")
    return sorted(found)


def _image_metadata(data: bytes) -> tuple[list[str], dict | None]:
    """Generator evidence in PNG text chunks and EXIF, and camera capture metadata."""
    from PIL import Image

    generator = []
    try:
        with Image.open(io.BytesIO(data)) as image:
            # PNG tEXt/iTXt/zTXt chunks ahead of the image data, where generators write them; Pillow's
            # ``text`` would decode the whole image a second time to look for chunks after it.
            text = image.info if image.format == "PNG" else {}
            exif = image.getexif()
            details = exif.get_ifd(_EXIF_IFD)
    except Exception:  # Pillow raises many types for malformed metadata; the pixels were already decoded
        return [], None
    parameters = str(text.get("parameters", ""))
    if "Steps:" in parameters and "Sampler:" in parameters:
        generator.append(f"PNG text 'parameters' from a Stable Diffusion web UI: {parameters[:_MAX_TEXT]!r}")
    for key in ("prompt", "workflow"):
        if _is_comfyui_graph(text.get(key)):
            generator.append(f"PNG text '{key}' holds a ComfyUI graph")
    comment = _exif_text(details.get(_EXIF_USER_COMMENT))
    if "Steps:" in comment and "Sampler:" in comment:
        generator.append(f"EXIF UserComment from a Stable Diffusion web UI: {comment[:_MAX_TEXT]!r}")
    software = _exif_text(exif.get(_EXIF_SOFTWARE))
    if GENERATOR_SOFTWARE.search(software):
        generator.append(f"EXIF Software names a generator: {software[:_MAX_TEXT]!r}")
    camera = {"make": _exif_text(exif.get(_EXIF_MAKE)), "model": _exif_text(exif.get(_EXIF_MODEL))}
    camera |= {name: _exif_text(details.get(tag)) for tag, name in _EXPOSURE_TAGS.items()}
    camera = {k: v for k, v in camera.items() if v}
    return generator, camera or None


def _is_comfyui_graph(value) -> bool:
    """ComfyUI saves its API prompt (nodes with ``class_type``) and its editor workflow (``nodes`` with ``type``)."""
    try:
        graph = json.loads(str(value))
    except (TypeError, ValueError):
        return False
    if not isinstance(graph, dict):
        return False
    if isinstance(graph.get("nodes"), list):
        return any(isinstance(node, dict) and "type" in node for node in graph["nodes"])
    return any(isinstance(node, dict) and "class_type" in node for node in graph.values())


def _exif_text(value) -> str:
    """An EXIF value as text; UserComment's 8-byte character-code prefix is honoured."""
    if isinstance(value, bytes):
        prefix, body = value[:8], value[8:]
        if prefix.startswith(b"UNICODE"):  # UTF-16 of either byte order: ASCII text has zero high bytes
            value = body.decode("utf-16-be" if body[:1] == b"\0" else "utf-16-le", "replace")
        elif prefix.rstrip(b"\0") in (b"ASCII", b""):  # the ASCII and undefined character codes
            value = body.decode("utf-8", "replace")
        else:
            value = value.decode("utf-8", "replace")
    return "" if value is None else str(value).strip("\0 ")
