"""The label config and the import tasks Label Studio needs for a batchal project, and the check of a config it sends."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

#: A label config larger than this is refused (a real one is a few KiB).
MAX_CONFIG_CHARS = 200_000

#: Default image URL of a task: Label Studio's own local-files serving (see the README).
#: ``{folder}`` is the images folder's name: Label Studio refuses a local storage equal to its
#: document root, so the root is the folder's parent and the storage the folder itself.
DEFAULT_IMAGE_URL = "/data/local-files/?d={folder}/{path}"


class ProtocolError(ValueError):
    """A request the backend cannot act on; answered 400 with its message."""


def choices_of(config: str) -> tuple[str, str, list[str]]:
    """(from_name, to_name, choice values) of the label config's single ``<Choices>`` tag."""
    if not isinstance(config, str) or not config.strip():
        raise ProtocolError("the label config is empty")
    if len(config) > MAX_CONFIG_CHARS or "<!DOCTYPE" in config.upper() or "<!ENTITY" in config.upper():
        raise ProtocolError("the label config is too large or declares a DOCTYPE/ENTITY; refused")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise ProtocolError(f"the label config is not XML ({exc})") from None
    tags = [t for t in root.iter() if t.tag == "Choices"]
    if len(tags) != 1:
        raise ProtocolError(f"the label config must hold exactly one <Choices> tag (it holds {len(tags)}); "
                            "batchal label-studio config PROJECT prints one that fits")
    tag = tags[0]
    values = [c.get("value") for c in tag.iter() if c.tag == "Choice"]
    if not tag.get("name") or not tag.get("toName") or not values or any(v is None for v in values):
        raise ProtocolError("the <Choices> tag needs name, toName and <Choice value=...> children")
    return tag.get("name"), tag.get("toName"), values


def label_config(classes: list[str], image_name: str = "image", choices_name: str = "label") -> str:
    """A Label Studio labelling config for the project: one image, one choice per class."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Image name="{image_name}" value="$image"/>\n'
            f'  <Choices name="{choices_name}" toName="{image_name}" choice="single" showInline="true">\n{choices}\n  </Choices>\n</View>\n')


def tasks_for(project, image_url: str = DEFAULT_IMAGE_URL) -> list[dict]:
    """Label Studio import tasks, one per item: ``data.image`` (``image_url`` with ``{path}``,
    the item's path relative to the images folder, and ``{folder}``, that folder's name, both
    URL-quoted) and ``data.batchal_id`` (the path unquoted: the id the backend maps the task back to)."""
    if "{path}" not in image_url:
        raise ValueError(f"--image-url must contain {{path}}; got {image_url!r}")
    folder = Path(project.meta.get("images_root") or ".").name
    url = image_url.replace("{folder}", quote(folder))
    return [{"data": {"image": url.replace("{path}", quote(path)), "batchal_id": path}}
            for _, path in sorted(project.store.item_paths().items())]

