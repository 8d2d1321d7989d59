"""The ``.ui`` file and the code agree: parameter names both ways, widget types, every ``ui.<name>`` used."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

from slicer_test_helpers import MODULE_DIR

UI_FILE = MODULE_DIR / "Resources" / "UI" / "RRLMedSAM.ui"
PARAMETER_FILE = MODULE_DIR / "RRLMedSAMSlicerLib" / "ParameterNode.py"

#: Widget classes the parameterNodeWrapper GUI connectors accept for each field type.
CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider", "QComboBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
    "str": {"QComboBox", "QLineEdit", "QTextEdit"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
}


def ui_widgets() -> dict[str, tuple[str, str | None]]:
    """Widget name -> (class, SlicerParameterName or None)."""
    widgets = {}
    for element in ET.parse(UI_FILE).getroot().iter("widget"):
        parameter = None
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
        widgets[element.get("name")] = (element.get("class"), parameter)
    return widgets


def parameter_fields() -> dict[str, str]:
    """Field name -> kind (bool/int/str/Path/node) of the ``@parameterNodeWrapper`` class."""
    tree = ast.parse(PARAMETER_FILE.read_text())
    wrapped = [
        node for node in tree.body
        if isinstance(node, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    assert len(wrapped) == 1, "exactly one @parameterNodeWrapper class expected"
    fields = {}
    for statement in wrapped[0].body:
        if isinstance(statement, ast.AnnAssign):
            annotation = ast.unparse(statement.annotation)
            base = re.sub(r"^Annotated\[(\w+(?:\.\w+)*),.*\]$", r"\1", annotation)
            fields[statement.target.id] = "node" if base.startswith("slicer.vtkMRML") else base
    return fields


def test_every_parameter_name_in_the_ui_is_a_field_and_vice_versa():
    in_ui = {parameter for _, parameter in ui_widgets().values() if parameter}
    fields = set(parameter_fields())
    assert in_ui - fields == set(), "SlicerParameterName without a parameter-node field"
    assert fields - in_ui == set(), "parameter-node fields without a widget in the .ui"
    names = [parameter for _, parameter in ui_widgets().values() if parameter]
    assert len(names) == len(set(names)), "a parameter is bound to two widgets"


def test_bound_widgets_have_a_connectable_type():
    fields = parameter_fields()
    for name, (widget_class, parameter) in ui_widgets().items():
        if parameter:
            assert widget_class in CONNECTABLE[fields[parameter]], f"{name} ({widget_class}) cannot show a {fields[parameter]}"


def test_every_ui_attribute_used_in_code_exists():
    widgets = ui_widgets()
    used: dict[str, set[str]] = {}
    for path in MODULE_DIR.rglob("*.py"):
        for name in re.findall(r"\.ui\.(\w+)", path.read_text()):
            used.setdefault(name, set()).add(path.name)
    assert used, "no ui.<name> found: the scan is broken"
    missing = {name: files for name, files in used.items() if name not in widgets}
    assert missing == {}, f"used in code but not in {UI_FILE.name}: {missing}"


def test_log_view_is_capped_and_read_only():
    root = ET.parse(UI_FILE).getroot()
    log = next(w for w in root.iter("widget") if w.get("name") == "logTextEdit")
    props = {p.get("name"): p for p in log.findall("property")}
    assert 0 < int(props["maximumBlockCount"].findtext("number")) <= 10000
    assert props["readOnly"].findtext("bool") == "true"


def test_node_selectors_get_the_scene():
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, (cls, _) in ui_widgets().items() if cls.startswith("qMRML") and "ComboBox" in cls}
    assert selectors <= receivers


def parameter_defaults() -> dict[str, object]:
    """Field name -> default value (literals only) of the ``@parameterNodeWrapper`` class."""
    tree = ast.parse(PARAMETER_FILE.read_text())
    wrapped = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.decorator_list)
    return {s.target.id: ast.literal_eval(s.value) for s in wrapped.body
            if isinstance(s, ast.AnnAssign) and s.value is not None and isinstance(s.value, ast.Constant)}


def test_the_panel_starts_from_the_engines_segment_defaults():
    """The panel's segmentation options start where ``rrlmedsam segment`` does (one set of defaults)."""
    from RRLMedSAMLib.inference.label_smoothing import AUTO
    from RRLMedSAMLib.inference.segment_options import SegmentOptions

    engine, panel = SegmentOptions(), parameter_defaults()
    assert panel["labelSmoothingAuto"] == (engine.label_smoothing_mm == AUTO)
    assert panel["registrationEnsemble"] == engine.registration_ensemble
    assert panel["volumeCalibration"] == engine.volume_calibration
