"""scripts/contract, step 3 and 4: nothing of openapi.yaml was lost on the way
through the client generators.

    check_generated.py openapi.yaml OUT_DIR

OUT_DIR holds swift5/, kotlin/ and python/<package>/ as scripts/contract
generated them, and the generators' logs (*.log). Fails (exit 1) when:

* a generator log has an ERROR line or an exception, or openapi-python-client
  said it could not parse, skipped or dropped anything;
* a named schema that is a model (an object with properties, an enum, or a
  oneOf of named shapes) has no generated model in one of the three clients
  (allowing for each generator's naming: case, underscores, a `Model`
  prefix for a reserved word);
* a generated type fell back to "anything" (`UNKNOWN_BASE_TYPE`,
  `AnyType`, or an `AnyCodable` / `kotlin.Any` member) where the schema
  names a type; free-form objects (`type: object` without `properties`)
  are the only members allowed to be "anything", and they are listed;
* a schema with a discriminator is not decoded by it (Swift switches on
  the discriminator, Kotlin has a sealed interface whose serializer does),
  or a client header became a type per operation instead of the shared
  `ClientPlatform`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

spec_path, out = Path(sys.argv[1]), Path(sys.argv[2])
spec = YAML(typ="safe").load(spec_path.read_text())
schemas: dict = spec["components"]["schemas"]
problems: list[str] = []
notes: list[str] = []


def norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def is_model(schema: dict) -> bool:
    if "enum" in schema or "properties" in schema:
        return True
    shapes = schema.get("oneOf") or schema.get("anyOf") or []
    return len(shapes) > 1 and all("$ref" in s for s in shapes)


def free_form(schema: dict) -> bool:
    return schema.get("type") == "object" and "properties" not in schema and "$ref" not in schema


models = sorted(n for n, s in schemas.items() if is_model(s))
aliases = sorted(n for n, s in schemas.items() if not is_model(s))

# --- the generators' own words -------------------------------------------
for log in sorted(out.glob("*.log")):
    text = log.read_text(errors="replace")
    bad = [l for l in text.splitlines() if re.search(r"\] ERROR|Exception|^Error", l)]
    if log.name == "python.log":
        bad += [
            l
            for l in text.splitlines()
            if re.search(r"Unable to parse|WARNING|Warning|Skipping|skipped|dropped|Could not", l)
        ]
    if bad:
        problems.append(f"{log.name}:\n    " + "\n    ".join(dict.fromkeys(bad)))
    warns = sorted({re.sub(r"^\[main\] WARN\s+", "", l) for l in text.splitlines() if "] WARN" in l})
    for w in warns:
        notes.append(f"{log.name}: warning: {w}")

# --- every model generated ------------------------------------------------
swift_dir = out / "swift5/OpenAPIClient/Classes/OpenAPIs/Models"
kotlin_dir = next((out / "kotlin/src/main/kotlin").rglob("models"), None)
python_dir = next((p for p in (out / "python").iterdir() if p.is_dir()), None)
clients = {
    "swift5": {norm(p.stem): p for p in swift_dir.glob("*.swift")},
    "kotlin": {norm(p.stem): p for p in kotlin_dir.glob("*.kt")} if kotlin_dir else {},
    "python": {norm(p.stem): p for p in (python_dir / "models").glob("*.py")} if python_dir else {},
}


def model_file(client: str, name: str) -> Path | None:
    # openapi-python-client names a nullable object (`type: [object, 'null']`)
    # `<name>_type_0`; openapi-generator prefixes a reserved word with Model.
    files = clients[client]
    return next(
        (files[k] for k in (norm(name), "model" + norm(name), norm(name) + "type0") if k in files),
        None,
    )


def composite(name: str) -> bool:
    return "oneOf" in schemas[name] or "anyOf" in schemas[name]


for client in clients:
    # openapi-python-client writes a oneOf of models as a Union in the
    # operations using it (its shapes are models of their own, checked).
    missing = [
        n for n in models if model_file(client, n) is None and not (client == "python" and composite(n))
    ]
    if missing:
        problems.append(f"{client}: no model for {missing}")


# --- no "anything" where a type was named ------------------------------------
for path in [*(out / "swift5").rglob("*.swift"), *(out / "kotlin").rglob("*.kt"), *(out / "python").rglob("*.py")]:
    text = path.read_text(errors="replace")
    for word in ("UNKNOWN_BASE_TYPE", "AnyType"):
        if word in text:
            problems.append(f"{path.relative_to(out)}: {word}")

member = {
    "swift5": re.compile(r"^\s+public (?:var|let) (\w+): (.+)$", re.M),
    "kotlin": re.compile(r"^\s+(?:@\w+(?:\([^)]*\))? )*val (\w+): ([^\n]+?),?$", re.M),
}
anything = {"swift5": "AnyCodable", "kotlin": "kotlin.Any"}
for client, pattern in member.items():
    for name in models:
        path = model_file(client, name)
        if path is None:
            continue
        props = schemas[name].get("properties", {})
        by_camel = {camel(k): v for k, v in props.items()}
        for prop, typ in pattern.findall(path.read_text()):
            if anything[client] not in typ:
                continue
            schema = by_camel.get(prop)
            if schema is not None and free_form(schema):
                notes.append(f"{client}: {name}.{prop} is free-form by design ({typ.strip()})")
            else:
                problems.append(f"{client}: {name}.{prop} fell back to {typ.strip()}")

# --- discriminators decode --------------------------------------------------
for name, schema in schemas.items():
    disc = schema.get("discriminator")
    if not disc:
        continue
    prop, values = disc["propertyName"], list(disc.get("mapping", {}))
    swift = model_file("swift5", name)
    text = swift.read_text() if swift else ""
    if f'case {prop} = "{prop}"' not in text or any(f'case "{v}":' not in text for v in values):
        problems.append(f"swift5: {name} is not decoded by `{prop}` ({values})")
    kotlin = model_file("kotlin", name)
    text = kotlin.read_text() if kotlin else ""
    if f"sealed interface {name}" not in text or f'element["{prop}"]' not in text or any(
        f'"{v}" ->' not in text for v in values
    ):
        problems.append(f"kotlin: {name} is not a sealed interface decoded by `{prop}` ({values})")

# --- one platform type, not one per operation ---------------------------------
for path in [*(out / "swift5").rglob("*API.swift"), *(out / "kotlin").rglob("*Api.kt")]:
    text = path.read_text()
    per_op = sorted(set(re.findall(r"(?:enum|enum class) (XClientPlatform\w*)", text)))
    if per_op:
        problems.append(f"{path.name}: a platform type per operation: {per_op}")
    if "xClientPlatform" in text and "xClientPlatform: ClientPlatform?" not in text:
        problems.append(f"{path.name}: X-Client-Platform is not the shared ClientPlatform")

print(f"{len(models)} model schemas, each generated in swift5, kotlin and python; "
      f"{len(aliases)} plain aliases inlined by design ({', '.join(aliases)})")
for n in notes:
    print("  " + n)
if problems:
    print("contract check FAILED:")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print("generated clients: no dropped schema, no fallback type, discriminators decode")
