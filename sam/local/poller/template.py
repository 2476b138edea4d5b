"""The template the event-source settings come from (``sam/template.yaml``): read as plain dicts, and the
intrinsic functions a settings value may use resolved as a deployment with the parameters' defaults would.

The YAML is decoded by cfn-lint (``cfnlint.decode.cfn_yaml``, the decoder ``make check`` runs on the same
file): short tags (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If`` ...) in their long forms (``{"Ref": ...}``,
``{"Fn::GetAtt": [...]}``), as CloudFormation reads them; duplicate keys are an error and YAML alias
expansion is bounded. Its nodes are ``str``/``dict``/``list`` subclasses carrying line marks;
``load_template`` hands out plain ``str``/``dict``/``list``.

Why a small resolver of our own (``Resolver``), not samtranslator's ``IntrinsicsResolver``: samtranslator is
not installed (cfn-lint 1.58 does not depend on it, requirements/dev.txt does not pin it) and does not fit
(checked against aws-sam-translator 1.110): it resolves only Ref, Fn::Sub and Fn::GetAtt to parameter values,
leaves Fn::If and Conditions unevaluated and ``AWS::NoValue`` in place, keeps a Ref to an unknown name
instead of failing, returns ``!Sub scoring-${Env}`` as ``{"Fn::Sub": "scoring-prod"}`` and rejects a Number
parameter in a Sub. cfn-lint's own resolvers (``cfnlint.jsonschema._resolvers_cfn``) are private, for linting.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from consumers.core.errors import ConfigError

DEFAULT_TEMPLATE = "sam/template.yaml"
DEFAULT_FUNCTION = "ScoringFunction"
DEFAULT_EVENT = "Stream"


def plain(value: object) -> object:
    """cfn-lint's nodes (``str_node``, ``dict_node``, ``list_node``: subclasses with line marks) as plain
    ``str``/``dict``/``list``, so that equality, ``repr``, ``yaml.safe_dump`` and JSON see ordinary values."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def load_template(path: str | Path) -> dict[str, object]:
    """A SAM/CloudFormation template as plain dicts (short tags in long form)."""
    # Imported here, not at the top: cfn-lint's package __init__ loads the whole linter (~0.6 s), which only
    # reading a template needs (not the importers of percentile or DropEMF).
    from cfnlint.decode import cfn_yaml

    text = Path(path).read_text(encoding="utf-8")
    doc = plain(cfn_yaml.loads(text, str(path)))
    # An empty document (cfn-lint decodes it as {}) is not a template either.
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    return doc


def child(node: object, key: str) -> dict[str, object]:
    """The mapping at ``node[key]`` (a section such as ``Parameters``, a resource's ``Properties`` ...);
    {} when it is absent or null."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ResourceRef:
    """A value the template leaves to deployment time: ``!GetAtt X.Arn`` or ``!Ref X`` of a resource."""

    logical_id: str
    attribute: str | None = None  # None: a !Ref

    def __str__(self) -> str:
        return f"!GetAtt {self.logical_id}.{self.attribute}" if self.attribute else f"!Ref {self.logical_id}"


@dataclass(frozen=True)
class Unresolved:
    """An intrinsic function the local reader does not evaluate (``Fn::ImportValue``, ``Fn::Split`` ...):
    harmless unless the poller needs that value, which then fails naming the key."""

    expression: str

    def __str__(self) -> str:
        return f"<{self.expression}: not resolvable locally>"


class _NoValue(enum.Enum):
    NO_VALUE = "AWS::NoValue"  # the property is left out


NO_VALUE = _NoValue.NO_VALUE


def _dig(tree: object, keys: Iterable[object]) -> object:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            raise KeyError(key)
        tree = tree[key]
    return tree


class Resolver:
    """Resolves the intrinsic functions a settings value may use, against the template's parameter defaults.
    Resource references stay ``ResourceRef`` (they only exist once deployed)."""

    def __init__(self, doc: dict[str, object], path: str, region: str) -> None:
        self.doc, self.path, self.region = doc, path, region
        self.params = child(doc, "Parameters")
        self.resources = child(doc, "Resources")
        self.pseudo: dict[str, object] = {
            "AWS::Region": region,
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
            "AWS::StackName": "local",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
            "AWS::StackId": "local",
        }

    def ref(self, name: object) -> object:
        if not isinstance(name, str):
            raise ConfigError(f"{self.path}: !Ref {name!r}: not a name")
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            p = self.params[name]
            if not isinstance(p, dict) or "Default" not in p:
                raise ConfigError(
                    f"{self.path}: Parameters.{name} has no Default; the local poller resolves "
                    f"!Ref {name} to its Default"
                )
            return p["Default"]
        if name in self.resources:
            return ResourceRef(name)
        raise ConfigError(f"{self.path}: !Ref {name}: no such parameter or resource")

    def condition(self, name: object) -> bool:
        conds = child(self.doc, "Conditions")
        if not isinstance(name, str) or name not in conds:
            raise ConfigError(f"{self.path}: Conditions.{name} is not defined")
        return self._truth(conds[name])

    def _truth(self, expr: object) -> bool:
        if isinstance(expr, dict) and len(expr) == 1:
            ((k, arg),) = expr.items()
            if k == "Condition":
                return self.condition(arg)
            if k == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                if isinstance(a, bool) or isinstance(b, bool):  # "true" parameter vs YAML true
                    return str(a).lower() == str(b).lower()
                return str(a) == str(b)
            if k == "Fn::Not":
                return not self._truth(arg[0])
            if k == "Fn::And":
                return all(self._truth(x) for x in arg)
            if k == "Fn::Or":
                return any(self._truth(x) for x in arg)
        raise ConfigError(f"{self.path}: cannot evaluate condition {expr!r}")

    def _sub(self, arg: object) -> str:
        variables: dict[object, object] = {}
        if isinstance(arg, str):
            text = arg
        elif isinstance(arg, list) and arg and isinstance(arg[0], str):
            text = arg[0]
            if len(arg) > 1 and isinstance(arg[1], dict):
                variables = arg[1]
        else:
            raise ConfigError(f"{self.path}: cannot evaluate !Sub {arg!r}")
        out: list[str] = []
        i = 0
        while i < len(text):
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = text.find("}", j)
            if k < 0:
                out.append(text[j:])
                break
            name = text[j + 2 : k]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in variables:
                out.append(str(self.resolve(variables[name])))
            elif "." not in name and (name in self.pseudo or name in self.params):
                out.append(str(self.ref(name)))
            else:
                out.append("${" + name + "}")  # a resource attribute: only known once deployed
            i = k + 1
        return "".join(out)

    def _function(self, k: str, arg: object) -> object:
        """One intrinsic function ``{k: arg}``; ``Unresolved`` for the ones not evaluated locally."""
        if k == "Ref":
            return self.ref(arg)
        if k == "Fn::If" and isinstance(arg, list):
            cond, a, b = arg
            return self.resolve(a if self.condition(cond) else b)
        if k == "Fn::Sub":
            return self._sub(arg)
        if k == "Fn::FindInMap" and isinstance(arg, list):
            m, a, b = (self.resolve(x) for x in arg)
            try:
                return self.resolve(_dig(self.doc, ("Mappings", m, a, b)))
            except (KeyError, TypeError):
                raise ConfigError(f"{self.path}: !FindInMap [{m}, {a}, {b}] is not in Mappings") from None
        if k == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return ResourceRef(str(parts[0]), str(parts[1]) if len(parts) > 1 else None)
        if k == "Fn::Join" and isinstance(arg, list):
            sep, parts = arg
            items = self.resolve(parts)
            # A str is joined by character, as before (a CommaDelimitedList default is not split).
            if isinstance(items, list | str):
                return str(sep).join(str(self.resolve(p)) for p in items)
        if k == "Fn::Select" and isinstance(arg, list):
            idx, items = arg
            seq, index = self.resolve(items), self.resolve(idx)
            if isinstance(seq, list | str) and isinstance(index, int | str):  # a str: by character, as before
                return self.resolve(seq[int(index)])
        return Unresolved(k)

    def resolve(self, v: object) -> object:
        if isinstance(v, dict):
            if len(v) == 1:
                ((k, arg),) = v.items()
                if k == "Ref" or (isinstance(k, str) and k.startswith("Fn::")):
                    return self._function(k, arg)
            out: dict[object, object] = {}
            for key, val in v.items():
                r = self.resolve(val)
                if r is not NO_VALUE:
                    out[key] = r
            return out
        if isinstance(v, list):
            return [r for r in (self.resolve(x) for x in v) if r is not NO_VALUE]
        return v


def function_environment(
    path: str | Path = DEFAULT_TEMPLATE, function: str = DEFAULT_FUNCTION, *, region: str | None = None
) -> dict[str, str | ResourceRef]:
    """The function's ``Environment.Variables`` (``Globals`` first, then the function's), resolved like
    the settings: literals and parameter defaults as strings, resource references as ``ResourceRef``
    (the local runner substitutes its own table and queue for those)."""
    path = str(path)
    doc = load_template(path)
    r = Resolver(doc, path, region or os.environ.get("AWS_REGION") or "us-east-1")
    fn = child(doc, "Resources").get(function)
    if not isinstance(fn, dict):
        raise ConfigError(f"{path}: Resources.{function} not found")
    glob = child(child(child(doc, "Globals"), "Function"), "Environment")
    own = child(child(fn, "Properties"), "Environment")
    env: dict[str, str | ResourceRef] = {}
    for source in (glob, own):
        variables = r.resolve(source.get("Variables") or {})
        if not isinstance(variables, dict):
            continue
        for k, v in variables.items():
            env[k] = v if isinstance(v, ResourceRef) else str(v).lower() if isinstance(v, bool) else str(v)
    return env
