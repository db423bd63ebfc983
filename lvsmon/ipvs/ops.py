"""Operations that change an IPVS table; the only vocabulary backends accept for writes."""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon.ipvs.model import DestConf, DestKey, ServiceConf, ServiceKey


@dataclass(frozen=True, slots=True)
class AddService:
    service: ServiceKey
    conf: ServiceConf


@dataclass(frozen=True, slots=True)
class EditService:
    service: ServiceKey
    conf: ServiceConf


@dataclass(frozen=True, slots=True)
class DeleteService:
    service: ServiceKey


@dataclass(frozen=True, slots=True)
class AddDest:
    service: ServiceKey
    dest: DestKey
    conf: DestConf


@dataclass(frozen=True, slots=True)
class EditDest:
    service: ServiceKey
    dest: DestKey
    conf: DestConf


@dataclass(frozen=True, slots=True)
class DeleteDest:
    service: ServiceKey
    dest: DestKey


Op = AddService | EditService | DeleteService | AddDest | EditDest | DeleteDest
