"""The manifest of a dataset folder (``dataset.yaml`` or ``dataset.json``): a strict schema.

An unknown key is an error (a typo never passes silently), and every error names the line
of the manifest it comes from. The format is documented in ``docs/dataset_format.md``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fusion.files import FileRefused
from multimodal_interest.data.errors import Problems
from multimodal_interest.data.yaml_file import YamlDocument, YamlRefused, load_yaml

MANIFEST_NAMES = ("dataset.yaml", "dataset.yml", "dataset.json")
MODALITIES = ("text", "image", "audio", "other")
FORMAT_VERSION = 1
PLATFORM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class VectorSpec:
    """Precomputed item features: an ``.npz`` holding ``item_id`` [N] and ``vectors`` [N, D]."""

    path: str
    modality: str


@dataclass(frozen=True)
class PlatformSpec:
    """One platform's catalog: its items table and which of its columns mean what."""

    items: str
    text: tuple[str, ...] = ()  # text columns, in the order they are joined for encoders
    image: str | None = None  # column of image paths, relative to the dataset folder
    audio: str | None = None  # column of audio paths, relative to the dataset folder
    vectors: dict[str, VectorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    name: str
    platforms: dict[str, PlatformSpec]  # in manifest order
    interactions: str
    synthetic: bool = False
    description: str = ""
    provenance: str = ""
    licence: str = ""
    user_links: str | None = None
    import_report: dict[str, int] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for spec in data["platforms"].values():
            spec["text"] = list(spec["text"])
        return data


def find_manifest(root: Path) -> Path | None:
    return next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)


def read_manifest(root: Path, problems: Problems) -> Manifest | None:
    """Parse and check the manifest of dataset folder ``root``; None when it is unusable."""
    path = find_manifest(root)
    if path is None:
        problems.add(str(root), f"not a dataset folder: none of {', '.join(MANIFEST_NAMES)} found")
        return None
    try:
        doc = load_yaml(path, path.name)
    except YamlRefused as exc:  # aliases, depth, repeated keys, values that do not convert
        problems.add(path.name, exc.reason, line=exc.line)
        return None
    except FileRefused as exc:  # too big, not a file
        problems.add(path.name, exc.reason)
        return None
    return _Reader(path.name, doc, problems).manifest(doc.data)


def write_manifest(manifest: Manifest, root: Path) -> Path:
    path = root / "dataset.yaml"
    tmp = root / f".dataset.yaml.tmp-{os.getpid()}"
    tmp.write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, allow_unicode=True,
                                  width=100), encoding="utf-8")
    os.replace(tmp, path)
    return path


class _Reader:
    """Builds the dataclasses from parsed YAML, reporting each problem at its line."""

    def __init__(self, file: str, doc: YamlDocument, problems: Problems) -> None:
        self.file, self.doc, self.problems = file, doc, problems
        self.ok = True

    def error(self, path: tuple, message: str) -> None:
        self.ok = False
        key = ".".join(map(str, path))
        line = self.doc.line_of(path)
        self.problems.add(self.file, f"{key + ': ' if key else ''}{message}", line=line)

    def mapping(self, data, path: tuple, required: tuple[str, ...], optional: tuple[str, ...]):
        if not isinstance(data, dict):
            self.error(path, f"expected a mapping, found {type(data).__name__}")
            return None
        for key in data:
            if key not in required + optional:
                self.error(path + (key,), f"unknown key (expected one of "
                                          f"{', '.join(required + optional)})")
        for key in required:
            if key not in data:
                self.error(path, f"missing required key '{key}'")
        return data

    def typed(self, data: dict, key: str, path: tuple, kind: type, default=None,
              required: bool = False):
        value = data.get(key)
        if value is None or (required and value == ""):
            if required and key in data:
                self.error(path + (key,), f"expected a non-empty {kind.__name__}")
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.error(path + (key,), f"expected {kind.__name__}, found {value!r}")
            return default
        return value

    def manifest(self, data) -> Manifest | None:
        top = ("name", "platforms", "interactions")
        rest = ("synthetic", "description", "provenance", "licence", "user_links",
                "import_report", "format")
        data = self.mapping(data, (), top, rest)
        if data is None:
            return None
        fmt = self.typed(data, "format", (), int, FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            self.error(("format",), f"unsupported format version {fmt} (this reader knows "
                                    f"{FORMAT_VERSION})")
        report = data.get("import_report") or {}
        if not isinstance(report, dict) or not all(isinstance(v, int) for v in report.values()):
            self.error(("import_report",), "expected a mapping of counts")
            report = {}
        platforms = {}
        raw = data.get("platforms")
        if isinstance(raw, dict) and raw:
            for name, spec in raw.items():
                if not PLATFORM_NAME.match(str(name)):
                    self.error(("platforms", name), "a platform name is letters, digits, '_', "
                                                    "'.' and '-', starting with a letter or digit")
                platforms[str(name)] = self.platform(spec, ("platforms", name))
        elif "platforms" in data:
            self.error(("platforms",), "expected a non-empty mapping of platform name -> spec")
        manifest = Manifest(
            name=self.typed(data, "name", (), str, "", required=True),
            platforms=platforms,
            interactions=self.typed(data, "interactions", (), str, "", required=True),
            synthetic=self.typed(data, "synthetic", (), bool, False),
            description=self.typed(data, "description", (), str, ""),
            provenance=self.typed(data, "provenance", (), str, ""),
            licence=self.typed(data, "licence", (), str, ""),
            user_links=self.typed(data, "user_links", (), str, None),
            import_report=dict(report),
        )
        return manifest if self.ok else None

    def platform(self, data, path: tuple) -> PlatformSpec | None:
        data = self.mapping(data, path, ("items",), ("text", "image", "audio", "vectors"))
        if data is None:
            return None
        text = data.get("text") or []
        if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
            self.error(path + ("text",), f"expected a list of column names, found {text!r}")
            text = []
        vectors = {}
        for name, spec in (self.typed(data, "vectors", path, dict, {}) or {}).items():
            vpath = path + ("vectors", name)
            spec = self.mapping(spec, vpath, ("path", "modality"), ())
            if spec is None:
                continue
            modality = self.typed(spec, "modality", vpath, str, "")
            if modality not in MODALITIES:
                self.error(vpath + ("modality",), f"expected one of {', '.join(MODALITIES)}, "
                                                  f"found {modality!r}")
            vectors[str(name)] = VectorSpec(
                self.typed(spec, "path", vpath, str, "", required=True), modality)
        return PlatformSpec(items=self.typed(data, "items", path, str, "", required=True),
                            text=tuple(text),
                            image=self.typed(data, "image", path, str, None),
                            audio=self.typed(data, "audio", path, str, None), vectors=vectors)
