"""Every aggregate of the ledger, imported in one place so that their event
types are registered before any stored event is read or verified."""

from __future__ import annotations

from domain.code import CodeVersion
from domain.credentials import ApiKey
from domain.dataset import Dataset, DatasetVersion
from domain.deployment import Deployment
from domain.experiment import Experiment
from domain.export import Export
from domain.integrity.ledger_key import LedgerKeyring
from domain.logged_model import LoggedModel
from domain.model import Model, ModelVersion
from domain.model_labels import ModelLabels
from domain.monitor import Monitor
from domain.pipeline import Pipeline
from domain.prediction import Prediction
from domain.principal import Principal
from domain.privileged_change import Bootstrap, PrivilegedChange
from domain.report import Report
from domain.run import Run
from domain.subject import Subject

AGGREGATES = (
    LedgerKeyring,
    Principal,
    ApiKey,
    Bootstrap,
    PrivilegedChange,
    Dataset,
    DatasetVersion,
    CodeVersion,
    Pipeline,
    Run,
    Model,
    ModelVersion,
    Deployment,
    Report,
    Subject,
    Prediction,
    Monitor,
    Export,
    Experiment,
    ModelLabels,
    LoggedModel,
)
