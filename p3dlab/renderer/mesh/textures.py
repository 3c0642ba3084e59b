"""PyTorch3D's ``pytorch3d.renderer.mesh.textures`` path: re-exports of the mesh textures, which
p3dlab keeps with the structures (``p3dlab.structures.textures``) because ``Meshes`` owns them."""

from p3dlab.structures.textures import TexturesAtlas, TexturesUV, TexturesVertex

__all__ = ["TexturesAtlas", "TexturesUV", "TexturesVertex"]
