"""Regenerate the DOCX and PDF samples in examples/handbook (needs python-docx and fpdf2)."""

from pathlib import Path

import docx
from fpdf import FPDF

HERE = Path(__file__).parent / "handbook"


def make_docx() -> None:
    d = docx.Document()
    d.core_properties.title = "Onboarding guide"
    d.add_heading("Onboarding guide", level=1)
    d.add_paragraph("Welcome to Alicerce Engenharia. This guide covers your first two weeks.")
    d.add_heading("First day", level=2)
    d.add_paragraph("Collect your badge and laptop at reception at 9:00. Your buddy will show "
                    "you the office and help you set up e-mail, VPN and multi-factor "
                    "authentication.")
    d.add_heading("First week", level=2)
    d.add_paragraph("Complete the mandatory trainings in the learning portal: information "
                    "security, data protection (LGPD) and the code of conduct. They take about "
                    "four hours in total and must be finished by Friday of your first week.")
    d.add_heading("Probation period", level=2)
    d.add_paragraph("The probation period lasts 90 days. Your manager holds feedback meetings "
                    "at 30, 60 and 90 days.")
    table = d.add_table(rows=3, cols=2)
    for row, (who, what) in zip(table.rows, [("People team", "rh@alicerce.example"),
                                             ("IT service desk", "ramal 4000"),
                                             ("Finance", "financeiro@alicerce.example")]):
        row.cells[0].text, row.cells[1].text = who, what
    d.save(HERE / "onboarding.docx")


def make_pdf() -> None:
    pdf = FPDF()
    pdf.set_title("Código de conduta")
    pages = [
        ("Código de conduta", "Este código orienta o comportamento de todos os colaboradores. "
         "Respeito, integridade e transparência são os nossos valores. Assédio moral ou sexual "
         "e discriminação de qualquer tipo não são tolerados."),
        ("Presentes e brindes", "É proibido aceitar presentes de fornecedores ou clientes com "
         "valor acima de R$ 200,00. Brindes institucionais de baixo valor podem ser aceitos e "
         "devem ser registrados no canal de compliance."),
        ("Canal de denúncias", "Denúncias podem ser feitas de forma anônima pelo canal de "
         "ética, disponível 24 horas por telefone (0800 000 0000) ou pelo site interno. "
         "Nenhum colaborador sofre retaliação por uma denúncia de boa-fé."),
    ]
    for title, body in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 7, body, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(HERE / "codigo-de-conduta.pdf"))


if __name__ == "__main__":
    make_docx()
    make_pdf()
