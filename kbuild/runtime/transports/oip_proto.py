"""The Open Inference Protocol's gRPC messages, built when imported.

The artifact carries no protoc output (*_pb2.py). Generated modules check the
protobuf runtime they run on: those from protoc 3.20+ refuse older runtimes
(and, since 5.26, name the exact version they need), while older ones fail on
newer runtimes. Which protobuf an artifact gets is decided by its lock, often
pinned by a model library (onnxruntime, tensorflow), so a shipped *_pb2.py
would fight the lock. Instead, PROTO below (the protocol's
grpc_predict_v2.proto, the services this server implements) is parsed here
into a FileDescriptorProto and registered in a private descriptor pool;
message_factory makes the classes. descriptor_pb2, DescriptorPool and
GetMessageClass are public, stable API from protobuf 4.22 on, no build tool is
needed, and the private pool cannot clash with another copy of the protocol
(e.g. tritonclient's) in the same process.

The parser reads the subset of proto3 that PROTO uses: messages (nested),
scalar, message, repeated and map fields, oneof, and a service of unary rpcs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped,unused-ignore]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)

PACKAGE = "inference"
SERVICE = "GRPCInferenceService"
FILE_NAME = "kbuild/grpc_predict_v2.proto"

PROTO = """
syntax = "proto3";
package inference;

service GRPCInferenceService {
  rpc ServerLive(ServerLiveRequest) returns (ServerLiveResponse) {}
  rpc ServerReady(ServerReadyRequest) returns (ServerReadyResponse) {}
  rpc ModelReady(ModelReadyRequest) returns (ModelReadyResponse) {}
  rpc ServerMetadata(ServerMetadataRequest) returns (ServerMetadataResponse) {}
  rpc ModelMetadata(ModelMetadataRequest) returns (ModelMetadataResponse) {}
  rpc ModelInfer(ModelInferRequest) returns (ModelInferResponse) {}
}

message ServerLiveRequest {}
message ServerLiveResponse { bool live = 1; }
message ServerReadyRequest {}
message ServerReadyResponse { bool ready = 1; }
message ModelReadyRequest { string name = 1; string version = 2; }
message ModelReadyResponse { bool ready = 1; }
message ServerMetadataRequest {}
message ServerMetadataResponse {
  string name = 1;
  string version = 2;
  repeated string extensions = 3;
}
message ModelMetadataRequest { string name = 1; string version = 2; }
message ModelMetadataResponse {
  message TensorMetadata {
    string name = 1;
    string datatype = 2;
    repeated int64 shape = 3;
  }
  string name = 1;
  repeated string versions = 2;
  string platform = 3;
  repeated TensorMetadata inputs = 4;
  repeated TensorMetadata outputs = 5;
}
message ModelInferRequest {
  message InferInputTensor {
    string name = 1;
    string datatype = 2;
    repeated int64 shape = 3;
    map<string, InferParameter> parameters = 4;
    InferTensorContents contents = 5;
  }
  message InferRequestedOutputTensor {
    string name = 1;
    map<string, InferParameter> parameters = 2;
  }
  string model_name = 1;
  string model_version = 2;
  string id = 3;
  map<string, InferParameter> parameters = 4;
  repeated InferInputTensor inputs = 5;
  repeated InferRequestedOutputTensor outputs = 6;
  repeated bytes raw_input_contents = 7;
}
message ModelInferResponse {
  message InferOutputTensor {
    string name = 1;
    string datatype = 2;
    repeated int64 shape = 3;
    map<string, InferParameter> parameters = 4;
    InferTensorContents contents = 5;
  }
  string model_name = 1;
  string model_version = 2;
  string id = 3;
  map<string, InferParameter> parameters = 4;
  repeated InferOutputTensor outputs = 5;
  repeated bytes raw_output_contents = 6;
}
message InferParameter {
  oneof parameter_choice {
    bool bool_param = 1;
    int64 int64_param = 2;
    string string_param = 3;
    double double_param = 4;
    uint64 uint64_param = 5;
  }
}
message InferTensorContents {
  repeated bool bool_contents = 1;
  repeated int32 int_contents = 2;
  repeated int64 int64_contents = 3;
  repeated uint32 uint_contents = 4;
  repeated uint64 uint64_contents = 5;
  repeated float fp32_contents = 6;
  repeated double fp64_contents = 7;
  repeated bytes bytes_contents = 8;
}
"""

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
_TOKEN = re.compile(r'\s*(?:(//[^\n]*)|([A-Za-z_][\w.]*|\d+|"[^"]*"|[{}<>=;,()]))', re.S)


class ProtoSyntaxError(ValueError):
    pass


@dataclass
class _Field:
    name: str
    number: int
    type: str
    repeated: bool = False
    map_value: str | None = None  # map<string, map_value>
    oneof: int | None = None


@dataclass
class _Message:
    name: str
    fields: list[_Field] = field(default_factory=list)
    nested: list[_Message] = field(default_factory=list)
    oneofs: list[str] = field(default_factory=list)


class _Tokens:
    def __init__(self, text: str) -> None:
        self.items: list[str] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ProtoSyntaxError(f"unexpected text at {text[pos : pos + 20]!r}")
            pos = m.end()
            if m.group(2) is not None:
                self.items.append(m.group(2))
        self.pos = 0

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ProtoSyntaxError(f"expected {expected or 'a token'}, got {token!r}")
        self.pos += 1
        return token


def parse(text: str) -> descriptor_pb2.FileDescriptorProto:
    """proto3 text (the subset described above) -> FileDescriptorProto."""
    tokens = _Tokens(text)
    out = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, syntax="proto3")
    messages: list[_Message] = []
    services: list[tuple[str, list[tuple[str, str, str]]]] = []
    while tokens.peek() is not None:
        word = tokens.take()
        if word == "syntax":
            tokens.take("=")
            if tokens.take() != '"proto3"':
                raise ProtoSyntaxError("only proto3 is supported")
            tokens.take(";")
        elif word == "package":
            out.package = tokens.take()
            tokens.take(";")
        elif word == "message":
            messages.append(_parse_message(tokens))
        elif word == "service":
            services.append(_parse_service(tokens))
        else:
            raise ProtoSyntaxError(f"unexpected {word!r}")
    scope = f".{out.package}"
    known = _names(messages, scope)
    for message in messages:
        out.message_type.append(_message_proto(message, scope, known))
    for name, rpcs in services:
        service = out.service.add(name=name)
        for rpc, request, response in rpcs:
            service.method.add(
                name=rpc,
                input_type=_resolve(request, scope, known),
                output_type=_resolve(response, scope, known),
            )
    return out


def _parse_message(tokens: _Tokens) -> _Message:
    message = _Message(tokens.take())
    tokens.take("{")
    while tokens.peek() != "}":
        word = tokens.peek()
        if word == "message":
            tokens.take()
            message.nested.append(_parse_message(tokens))
        elif word == "oneof":
            tokens.take()
            message.oneofs.append(tokens.take())
            tokens.take("{")
            while tokens.peek() != "}":
                message.fields.append(_parse_field(tokens, oneof=len(message.oneofs) - 1))
            tokens.take("}")
        else:
            message.fields.append(_parse_field(tokens))
    tokens.take("}")
    return message


def _parse_field(tokens: _Tokens, oneof: int | None = None) -> _Field:
    repeated = False
    map_value = None
    word = tokens.take()
    if word == "repeated":
        repeated, word = True, tokens.take()
    if word == "map":
        tokens.take("<")
        if tokens.take() != "string":
            raise ProtoSyntaxError("only map<string, ...> is supported")
        tokens.take(",")
        map_value = tokens.take()
        tokens.take(">")
    name = tokens.take()
    tokens.take("=")
    number = int(tokens.take())
    tokens.take(";")
    return _Field(name, number, word, repeated, map_value, oneof)


def _parse_service(tokens: _Tokens) -> tuple[str, list[tuple[str, str, str]]]:
    name = tokens.take()
    rpcs: list[tuple[str, str, str]] = []
    tokens.take("{")
    while tokens.peek() != "}":
        tokens.take("rpc")
        rpc = tokens.take()
        tokens.take("(")
        request = tokens.take()
        tokens.take(")")
        tokens.take("returns")
        tokens.take("(")
        response = tokens.take()
        tokens.take(")")
        tokens.take("{")
        tokens.take("}")
        rpcs.append((rpc, request, response))
    tokens.take("}")
    return name, rpcs


def _names(messages: list[_Message], scope: str) -> set[str]:
    out: set[str] = set()
    for m in messages:
        full = f"{scope}.{m.name}"
        out.add(full)
        out |= _names(m.nested, full)
    return out


def _resolve(name: str, scope: str, known: set[str]) -> str:
    """Proto scoping: the innermost enclosing scope that defines the name."""
    parts = scope.split(".")
    while parts:
        candidate = ".".join([*parts, name])
        if candidate in known:
            return candidate
        parts.pop()
    raise ProtoSyntaxError(f"unknown type {name!r} in {scope}")


def _message_proto(message: _Message, scope: str, known: set[str]) -> descriptor_pb2.DescriptorProto:
    full = f"{scope}.{message.name}"
    out = descriptor_pb2.DescriptorProto(name=message.name)
    for nested in message.nested:
        out.nested_type.append(_message_proto(nested, full, known))
    for name in message.oneofs:
        out.oneof_decl.add(name=name)
    for f in message.fields:
        proto = out.field.add(name=f.name, number=f.number)
        proto.label = _F.LABEL_REPEATED if f.repeated or f.map_value else _F.LABEL_OPTIONAL
        if f.oneof is not None:
            proto.oneof_index = f.oneof
        if f.map_value is not None:
            entry_name = "".join(p.capitalize() for p in f.name.split("_")) + "Entry"
            entry = out.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
            value = entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL)
            _set_type(value, f.map_value, full, known)
            proto.type = _F.TYPE_MESSAGE
            proto.type_name = f"{full}.{entry_name}"
        else:
            _set_type(proto, f.type, full, known)
    return out


def _set_type(proto: descriptor_pb2.FieldDescriptorProto, type_name: str, scope: str, known: set[str]) -> None:
    scalar = _SCALARS.get(type_name)
    if scalar is not None:
        proto.type = scalar
    else:
        proto.type = _F.TYPE_MESSAGE
        proto.type_name = _resolve(type_name, scope, known)


def _message_class(pool: descriptor_pool.DescriptorPool, name: str) -> Any:
    descriptor = pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # protobuf < 4.22


@dataclass(frozen=True)
class Rpc:
    name: str
    request: Any  # message class
    response: Any


def load() -> tuple[descriptor_pb2.FileDescriptorProto, dict[str, Rpc]]:
    """The parsed file and the service's rpcs with their message classes."""
    file_proto = parse(PROTO)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    rpcs: dict[str, Rpc] = {}
    for method in file_proto.service[0].method:
        rpcs[method.name] = Rpc(
            method.name,
            _message_class(pool, method.input_type.rsplit(".", 1)[1]),
            _message_class(pool, method.output_type.rsplit(".", 1)[1]),
        )
    return file_proto, rpcs


FILE, RPCS = load()
