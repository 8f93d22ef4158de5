{#
  The internal_* seeds drive the stage casts and the processed column lists. They are
  read at execution time (run_query), so editing a seed changes the models without
  touching SQL. At parse time there is nothing to read: the macros return no rows.
#}

{% macro seed_rows(seed_name, entity, columns) -%}
    {%- set relation = ref(seed_name) -%}
    {%- if not execute -%}{{ return([]) }}{%- endif -%}
    {%- set quoted = [] -%}
    {%- for c in columns -%}{%- do quoted.append(adapter.quote(c)) -%}{%- endfor -%}
    {%- set sql -%}
        select {{ quoted | join(', ') }} from {{ relation }}
        where {{ adapter.quote('entity') }} = '{{ entity }}'
        order by {{ quoted[1] }}
    {%- endset -%}
    {%- set rows = [] -%}
    {%- for row in run_query(sql).rows -%}
        {%- set item = {} -%}
        {%- for c in columns -%}{%- do item.update({c: row[loop.index0]}) -%}{%- endfor -%}
        {%- do rows.append(item) -%}
    {%- endfor -%}
    {{ return(rows) }}
{%- endmacro %}

{# The typed select list of one stage model: `<cast> as <name>` for every column of the entity. #}
{% macro stage_columns(entity) -%}
    {%- set rows = seed_rows('internal_column_types', entity, ['entity', 'column', 'type', 'name']) -%}
    {%- if not rows -%}
        {%- if execute -%}{{ exceptions.raise_compiler_error("internal_column_types has no row for entity '" ~ entity ~ "': add its columns to dbt_project/seeds/internal_column_types.csv and run dbt seed") }}{%- endif -%}
        null as _not_compiled
    {%- endif -%}
    {%- for row in rows %}
        {{ cast_dicom_column(row['column'], row['type']) }} as {{ row['name'] }}{{ ',' if not loop.last }}
    {%- endfor -%}
{%- endmacro %}
