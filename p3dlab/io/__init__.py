"""Reading and writing PLY and OBJ/MTL files (PyTorch3D's ``pytorch3d.io`` names).

Every failure is a ``FileFormatError`` (``PLYError``, ``OBJError``, ``UnsafePathError``) that
names the file and the line or byte offset.
"""

from p3dlab.io.errors import FileFormatError, OBJError, PLYError, UnsafePathError
from p3dlab.io.obj_io import Faces, Properties, load_mtl, load_obj, load_objs_as_meshes, save_obj
from p3dlab.io.pluggable import IO
from p3dlab.io.ply_io import PlyData, load_ply, read_ply, save_ply

__all__ = [
    "Faces",
    "FileFormatError",
    "IO",
    "OBJError",
    "PLYError",
    "PlyData",
    "Properties",
    "UnsafePathError",
    "load_mtl",
    "load_obj",
    "load_objs_as_meshes",
    "load_ply",
    "read_ply",
    "save_obj",
    "save_ply",
]
